// PostgreSQL databases for tests: each made for the test that asks (test_<pid>_<random>) and
// dropped by dropAll(); the admin database is only used to create and drop them, and nothing
// this run did not create is touched. The server: TEST_POSTGRES_URL, by default
// postgres@127.0.0.1:5432 with trust auth (what CI and these machines run).
import { randomBytes } from "node:crypto";
import pg from "pg";

export const postgresAdminUrl =
  process.env.TEST_POSTGRES_URL ?? "postgres://postgres@127.0.0.1:5432/postgres";

export interface TestDatabase {
  name: string;
  /** Its URL, straight to the server, or through `port` on 127.0.0.1 (a proxy). */
  url(port?: number): string;
}

export class TestDatabases {
  private readonly created: string[] = [];

  constructor(private readonly prefix = "test") {}

  async create(): Promise<TestDatabase> {
    const name = `${this.prefix}_${process.pid}_${randomBytes(4).toString("hex")}`;
    // An ICU en-US collation, as on Cloud SQL (en_US.UTF8), not this server's default: text
    // does not sort in code-unit order there, and nothing may rely on the server's default.
    await adminStatement(
      `create database "${name}" template template0 locale_provider icu icu_locale 'en-US' locale 'C.UTF-8'`,
    );
    this.created.push(name);
    return {
      name,
      url: (port?: number) => {
        const value = new URL(postgresAdminUrl);
        value.pathname = `/${name}`;
        if (port !== undefined) {
          value.hostname = "127.0.0.1";
          value.port = String(port);
        }
        return value.toString();
      },
    };
  }

  /** Drops every database made here (FORCE: a pool that failed to close must not keep one alive). */
  async dropAll(): Promise<void> {
    for (const name of this.created.splice(0)) {
      await adminStatement(`drop database if exists "${name}" with (force)`);
    }
  }
}

/** One statement on the admin database; unreachable means the tests cannot run: say what they need. */
export async function adminStatement(statement: string): Promise<void> {
  const client = new pg.Client({
    connectionString: postgresAdminUrl,
    connectionTimeoutMillis: 5_000,
  });
  try {
    await client.connect();
  } catch (error) {
    const where = new URL(postgresAdminUrl);
    where.password = "";
    throw new Error(
      `these tests need a PostgreSQL server at ${where.host} (user ${where.username || "postgres"}, ` +
        `allowed to create databases, e.g. PostgreSQL 15 with trust auth on 127.0.0.1:5432); ` +
        `set TEST_POSTGRES_URL to use another: ${describeError(error)}`,
    );
  }
  try {
    await client.query(statement);
  } finally {
    await client.end();
  }
}

function describeError(error: unknown): string {
  // Connecting to "localhost" may fail as an AggregateError with an empty message.
  const { message, code } = error as { message?: string; code?: string };
  return message || code || String(error);
}
