// Databases of the tests' own on the machine's PostgreSQL (127.0.0.1:5432, or
// TEST_POSTGRES_URL): created with a unique name, dropped after, nothing else touched.
import { randomBytes } from "node:crypto";
import pg from "pg";

const adminUrl = process.env.TEST_POSTGRES_URL ?? "postgres://postgres@127.0.0.1:5432/postgres";

export interface TestDatabase {
  name: string;
  /** postgres:// URL of the new database, through `port` when given (e.g. a proxy's). */
  url(port?: number): string;
  drop(): Promise<void>;
}

async function admin<T>(work: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: adminUrl, connectionTimeoutMillis: 5_000 });
  try {
    await client.connect();
  } catch (error) {
    throw new Error(
      `these tests need PostgreSQL at ${adminUrl} (user postgres, trust auth; set TEST_POSTGRES_URL to use another): ${(error as Error).message}`,
    );
  }
  try {
    return await work(client);
  } finally {
    await client.end();
  }
}

export async function createTestDatabase(prefix = "routeguide_test"): Promise<TestDatabase> {
  const name = `${prefix}_${process.pid}_${randomBytes(4).toString("hex")}`;
  await admin((client) => client.query(`create database "${name}"`));
  const base = new URL(adminUrl);
  return {
    name,
    url(port) {
      const url = new URL(base);
      url.pathname = `/${name}`;
      if (port !== undefined) url.port = String(port);
      return url.toString();
    },
    drop: () =>
      admin((client) => client.query(`drop database if exists "${name}" with (force)`)).then(
        () => undefined,
      ),
  };
}

/** The port of the PostgreSQL the tests use (for a proxy in front of it). */
export const postgresPort = Number(new URL(adminUrl).port || 5432);
export const postgresHost = new URL(adminUrl).hostname;
