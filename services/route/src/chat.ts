// RouteChat's memory: the notes of one chat, by location. It lives as long as the call.
import { type Point, pointKey } from "@cloudrun-grpc/domain";

export interface Note {
  location: Point;
  message: string;
}

export class ChatHistory {
  private readonly byLocation = new Map<string, Note[]>();
  private count = 0;

  get size(): number {
    return this.count;
  }

  /** Returns the notes left earlier at the note's location, then remembers the note. */
  exchange(note: Note): Note[] {
    const key = pointKey(note.location);
    const earlier = this.byLocation.get(key) ?? [];
    const answer = [...earlier];
    earlier.push(note);
    this.byLocation.set(key, earlier);
    this.count += 1;
    return answer;
  }
}
