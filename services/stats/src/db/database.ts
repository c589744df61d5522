// One connection layer over the two ways to reach PostgreSQL (node-postgres, Cloud SQL
// connector + node-postgres), so the store has one code path: a drizzle database, LISTEN,
// migrations under a lock, close.
import { fileURLToPath } from "node:url";
import { AuthTypes, Connector, IpAddressTypes } from "@google-cloud/cloud-sql-connector";
import { drizzle as drizzlePg } from "drizzle-orm/node-postgres";
import { migrate as migratePg } from "drizzle-orm/node-postgres/migrator";
import type { PgDatabase, PgQueryResultHKT } from "drizzle-orm/pg-core";
import pg from "pg";
import type { DatabaseTarget } from "./target.js";

export type StatsDb = PgDatabase<PgQueryResultHKT>;

export const migrationsFolder = fileURLToPath(new URL("../../drizzle", import.meta.url));

// Any constant shared by every stats instance: pg_advisory_lock keys are global to the database.
const migrationLockKey = 7_423_011;
// How long a migration, including the wait for another instance's, may take.
const migrationBudgetMs = 120_000;

export interface DatabaseOptions {
  poolMax: number;
  /** Connect and query timeout. */
  timeoutMs: number;
  /** With cloudsql://: the IAM database user. */
  iamUser?: string | undefined;
  /** A connection dropped outside any query (an idle pooled one, the listener). */
  onConnectionError: (error: Error) => void;
}

export interface Database {
  db: StatsDb;
  /** Applies the migrations in drizzle/, one instance at a time. */
  migrate(): Promise<void>;
  /**
   * Calls `onNotify` for each NOTIFY on `channel`. Resolves once listening; if the listening
   * connection drops, `onConnectionError` hears it and the caller listens again.
   */
  listen(channel: string, onNotify: () => void): Promise<void>;
  close(): Promise<void>;
}

export async function openDatabase(
  target: DatabaseTarget,
  options: DatabaseOptions,
): Promise<Database> {
  let connector: Connector | undefined;
  let connection: pg.ClientConfig;
  if (target.kind === "cloudsql") {
    connector = new Connector();
    const socket = await connector.getOptions({
      instanceConnectionName: target.instance,
      ipType: IpAddressTypes.PUBLIC,
      authType: AuthTypes.IAM,
    });
    connection = { ...socket, user: options.iamUser, database: target.database };
  } else {
    connection = { connectionString: target.url };
  }
  const timeouts = {
    connectionTimeoutMillis: options.timeoutMs,
    // Client side: a query on a connection that stopped answering still ends.
    query_timeout: options.timeoutMs,
    // Server side: the database stops working on it too.
    statement_timeout: options.timeoutMs,
    idle_in_transaction_session_timeout: options.timeoutMs * 2,
    application_name: "stats",
    // A connection dropped without a FIN (a NAT, a failover) is noticed, not waited on.
    keepAlive: true,
  };
  const pool = new pg.Pool({ ...connection, ...timeouts, max: options.poolMax });
  // Without a listener, an idle pooled connection that drops would crash the process.
  pool.on("error", options.onConnectionError);
  // So would a checked-out one (a transaction in flight, the migration lock): the pool only
  // listens to its idle clients.
  pool.on("connect", (client) => client.on("error", options.onConnectionError));
  const listeners: pg.Client[] = [];

  try {
    // Fail here, with the reason, when the database is unreachable.
    await pool.query("select 1");
  } catch (error) {
    await pool.end().catch(() => {});
    connector?.close();
    throw error;
  }

  return {
    db: drizzlePg(pool) as unknown as StatsDb,
    async migrate() {
      // A connection of its own, without the pool's query timeout: waiting for another
      // instance's migration and the DDL itself may take longer than a query may. Bounded by
      // its own budget instead.
      const client = new pg.Client({
        ...connection,
        ...timeouts,
        query_timeout: undefined,
        statement_timeout: migrationBudgetMs,
        lock_timeout: migrationBudgetMs,
      });
      client.on("error", () => {});
      await client.connect();
      try {
        // Two instances starting at once: the second waits here, then finds nothing to do.
        await client.query("select pg_advisory_lock($1)", [migrationLockKey]);
        try {
          await migratePg(drizzlePg(client), { migrationsFolder });
        } finally {
          await client.query("select pg_advisory_unlock($1)", [migrationLockKey]);
        }
      } finally {
        await client.end().catch(() => {});
      }
    },
    async listen(channel, onNotify) {
      // LISTEN needs a connection of its own for as long as it listens, outside the pool.
      const client = new pg.Client({ ...connection, ...timeouts, query_timeout: undefined });
      client.on("error", options.onConnectionError);
      client.on("notification", (message) => {
        if (message.channel === channel) onNotify();
      });
      try {
        await client.connect();
        await client.query(`listen "${channel.replaceAll('"', '""')}"`);
      } catch (error) {
        await client.end().catch(() => {});
        throw error;
      }
      listeners.push(client);
    },
    async close() {
      for (const client of listeners.splice(0)) await client.end().catch(() => {});
      await pool.end();
      connector?.close();
    },
  };
}
