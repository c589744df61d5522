// Fresh SqlStatsStores for the tests, started and ready, on a real PostgreSQL server
// (test-support's TestDatabases: TEST_POSTGRES_URL, by default postgres@127.0.0.1:5432 with
// trust auth), a database made for each test (stats_test_<pid>_<random>) and dropped after.
// release() (after each test) and cleanup() (after the last) close every store opened here and
// remove every database and directory made here, and nothing else.
import { createLogger, type Logger, Readiness, silentLogger } from "@cloudrun-grpc/runtime";
import { type TestDatabase, TestDatabases, within } from "@cloudrun-grpc/test-support";
import pg from "pg";
import type { DatabaseTarget } from "../../src/db/target.js";
import { SqlStatsStore } from "../../src/sql-store.js";

export type Backend = "postgres";
export const backends: readonly Backend[] = ["postgres"];

export { postgresAdminUrl } from "@cloudrun-grpc/test-support";

/** Silent unless STATS_TEST_LOG_LEVEL says otherwise (the fault tests make the store log a lot). */
export const testLogger = createLogger({
  service: "stats-test",
  level: process.env.STATS_TEST_LOG_LEVEL ?? "silent",
});

/** A silent logger that keeps what the store warned about or reported as an error. */
export function recordingLogger(): { logger: Logger; problems: string[] } {
  const logger = silentLogger();
  const problems: string[] = [];
  const keep = (level: string) =>
    ((first: unknown, second?: unknown) => {
      problems.push(`${level}: ${typeof first === "string" ? first : String(second)}`);
    }) as Logger["warn"];
  logger.warn = keep("warn");
  logger.error = keep("error");
  return { logger, problems };
}

export interface StoreOptions {
  /** STATS_DATABASE_TIMEOUT_MS; 5 s by default. */
  timeoutMs?: number;
  poolMax?: number;
  /** STATS_EVENT_ID_RETENTION_HOURS in ms; a week by default. */
  eventIdRetentionMs?: number;
  logger?: Logger;
  /** postgres: reach the server through this port on 127.0.0.1 (a proxy) instead. */
  port?: number;
  /** Resolve only once the store is ready (the default); false: right after start(). */
  waitReady?: boolean;
}

export interface OpenStore {
  store: SqlStatsStore;
  readiness: Readiness;
}

export interface Stores {
  readonly backend: Backend;
  /** A store on a database of its own, started (and ready unless told otherwise). */
  fresh(options?: StoreOptions): Promise<OpenStore>;
  /** Closes every store opened so far and drops their databases (after each test). */
  release(): Promise<void>;
  /** release(): after the last test. */
  cleanup(): Promise<void>;
}

export function storesFor(_backend: Backend): Stores {
  return new PostgresStores();
}

const readyTimeoutMs = 20_000;

/** Resolves when `readiness` is true; otherwise fails with why the store says it cannot serve. */
export async function waitUntilReady(
  { store, readiness }: OpenStore,
  where: string,
  timeoutMs = readyTimeoutMs,
): Promise<void> {
  if (readiness.ready) return;
  let unsubscribe = () => {};
  let timer: NodeJS.Timeout | undefined;
  const ready = await new Promise<boolean>((resolve) => {
    unsubscribe = readiness.subscribe((value) => value && resolve(true));
    timer = setTimeout(() => resolve(false), timeoutMs);
  }).finally(() => {
    unsubscribe();
    clearTimeout(timer);
  });
  if (ready) return;
  // The store's own answer carries the last connection error.
  const reason = await store.snapshot({ topN: 1 }).then(
    () => "it answers, yet readiness is false",
    (error: Error) => error.message,
  );
  throw new Error(`the stats store on ${where} was not ready after ${timeoutMs} ms: ${reason}`);
}

abstract class BaseStores implements Stores {
  abstract readonly backend: Backend;
  private readonly opened: SqlStatsStore[] = [];

  abstract fresh(options?: StoreOptions): Promise<OpenStore>;
  protected abstract removeAll(): Promise<void>;

  protected async open(
    target: DatabaseTarget,
    where: string,
    options: StoreOptions = {},
  ): Promise<OpenStore> {
    const readiness = new Readiness(false);
    const store = new SqlStatsStore({
      target,
      database: { poolMax: options.poolMax ?? 4, timeoutMs: options.timeoutMs ?? 5_000 },
      logger: options.logger ?? testLogger,
      readiness,
      eventIdRetentionMs: options.eventIdRetentionMs ?? 7 * 24 * 3_600_000,
    });
    this.opened.push(store);
    store.start();
    const opened = { store, readiness };
    if (options.waitReady ?? true) await waitUntilReady(opened, where);
    return opened;
  }

  async release(): Promise<void> {
    // close() is idempotent, so stores a test already closed are fine here.
    // Bounded: a close that hangs is a bug to see, not a test run that never ends.
    for (const store of this.opened.splice(0)) await within(store.close(), 10_000, "store.close()");
    await this.removeAll();
  }

  async cleanup(): Promise<void> {
    await this.release();
  }
}

/** A database this run created on the PostgreSQL server. */
export interface PostgresDatabase extends TestDatabase {
  /** Opens a store (an instance) on it; call again for a second instance. */
  open(options?: StoreOptions): Promise<OpenStore>;
  /** One statement straight on the database, outside any store. */
  query<Row extends pg.QueryResultRow>(text: string, values?: unknown[]): Promise<Row[]>;
}

export class PostgresStores extends BaseStores {
  readonly backend = "postgres";
  private readonly databases = new TestDatabases("stats_test");

  async fresh(options?: StoreOptions): Promise<OpenStore> {
    return (await this.database()).open(options);
  }

  async database(): Promise<PostgresDatabase> {
    const database = await this.databases.create();
    return {
      ...database,
      open: (options) =>
        this.open(
          { kind: "postgres", url: database.url(options?.port) },
          `postgres database ${database.name}`,
          options,
        ),
      async query(text, values) {
        const client = new pg.Client({
          connectionString: database.url(),
          connectionTimeoutMillis: 5_000,
        });
        await client.connect();
        try {
          return (await client.query(text, values)).rows;
        } finally {
          await client.end();
        }
      },
    };
  }

  protected async removeAll(): Promise<void> {
    await this.databases.dropAll();
  }
}
