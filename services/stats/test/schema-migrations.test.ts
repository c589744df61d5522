// The migrations in drizzle/ are what drizzle-kit makes of src/db/schema.ts: a schema change
// without `pnpm --filter @cloudrun-grpc/stats db:generate` would deploy tables that differ
// from what the code expects.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { cpSync, readdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

const pkg = fileURLToPath(new URL("..", import.meta.url));

test("drizzle/ is up to date with src/db/schema.ts", { timeout: 60_000 }, () => {
  // drizzle-kit resolves --out against the working directory, so the copy lives in the package.
  const copy = `.migrations-check-${process.pid}`;
  cpSync(join(pkg, "drizzle"), join(pkg, copy), { recursive: true });
  try {
    const before = readdirSync(join(pkg, copy)).sort();
    const output = execFileSync(
      process.execPath,
      [
        join(pkg, "node_modules", "drizzle-kit", "bin.cjs"),
        "generate",
        "--dialect=postgresql",
        "--schema=./src/db/schema.ts",
        `--out=./${copy}`,
      ],
      { cwd: pkg, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] },
    );
    const after = readdirSync(join(pkg, copy)).sort();
    assert.deepEqual(
      after,
      before,
      `schema.ts changed without a migration; run pnpm --filter @cloudrun-grpc/stats db:generate\n${output}`,
    );
  } finally {
    rmSync(join(pkg, copy), { recursive: true, force: true });
  }
});
