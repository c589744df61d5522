#!/usr/bin/env node
// The `routeguide` command. A committed file, so pnpm can link the bin at install time, before
// anything is built (pointing the bin at dist/main.js made every fresh install warn); the
// command itself is the build's (pnpm turbo build).
import { existsSync } from "node:fs";

const main = new URL("../dist/main.js", import.meta.url);
if (!existsSync(main)) {
  process.stderr.write("routeguide: the CLI is not built yet: run `pnpm turbo build` first\n");
  process.exit(2);
}
await import(main.href);
