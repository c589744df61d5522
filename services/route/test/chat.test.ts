import assert from "node:assert/strict";
import { describe, test } from "node:test";
import type { Point } from "@cloudrun-grpc/domain";
import { ChatHistory, type Note } from "../src/chat.js";

const here: Point = { latitude: 400_000_000, longitude: -750_000_000 };
const there: Point = { latitude: 400_000_000, longitude: -750_000_001 };
const note = (location: Point, message: string): Note => ({ location: { ...location }, message });

describe("ChatHistory", () => {
  test("the first note at a location gets nothing back", () => {
    const history = new ChatHistory();
    assert.deepEqual(history.exchange(note(here, "first")), []);
    assert.equal(history.size, 1);
  });

  test("each note gets exactly the earlier notes at the same location, in order", () => {
    const history = new ChatHistory();
    assert.deepEqual(history.exchange(note(here, "a")), []);
    assert.deepEqual(history.exchange(note(here, "b")), [note(here, "a")]);
    assert.deepEqual(history.exchange(note(here, "c")), [note(here, "a"), note(here, "b")]);
    assert.equal(history.size, 3);
  });

  test("notes at other locations do not leak, even one unit away", () => {
    const history = new ChatHistory();
    history.exchange(note(here, "here 1"));
    assert.deepEqual(history.exchange(note(there, "there 1")), []);
    history.exchange(note(here, "here 2"));
    assert.deepEqual(history.exchange(note(there, "there 2")), [note(there, "there 1")]);
    assert.deepEqual(history.exchange(note(here, "here 3")), [
      note(here, "here 1"),
      note(here, "here 2"),
    ]);
    assert.equal(history.size, 5);
  });

  test("an answer is a copy: later notes do not change an answer already given", () => {
    const history = new ChatHistory();
    history.exchange(note(here, "a"));
    const answer = history.exchange(note(here, "b"));
    history.exchange(note(here, "c"));
    assert.deepEqual(answer, [note(here, "a")]);
  });

  test("two histories (two calls) share nothing", () => {
    const first = new ChatHistory();
    const second = new ChatHistory();
    first.exchange(note(here, "from the first call"));
    assert.deepEqual(second.exchange(note(here, "from the second call")), []);
  });
});
