// infra/ parsed without terraform: every .tf file of a folder through @cdktf/hcl2json, merged
// as Terraform merges them (test/infra.test.ts checks it; the deploy-script test models what
// an apply creates from it).
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { parse } from "@cdktf/hcl2json";

// hcl2json's shape: every block is a list of bodies; attributes are values, and any expression
// that is not a plain literal is a "${...}" string.
export type Body = Record<string, unknown>;

export interface TerraformDir {
  files: Record<string, string>;
  config: Record<string, Record<string, Body[] | Record<string, Body[]>>>;
}

export async function loadDir(dir: string): Promise<TerraformDir> {
  const files: Record<string, string> = {};
  const config: TerraformDir["config"] = {};
  for (const name of readdirSync(dir).filter((file) => file.endsWith(".tf"))) {
    const file = name;
    files[name] = readFileSync(join(dir, name), "utf8");
    const parsed = (await parse(name, files[name])) as TerraformDir["config"];
    for (const [kind, blocks] of Object.entries(parsed)) {
      config[kind] ??= {};
      for (const [key, value] of Object.entries(blocks)) {
        const merged: TerraformDir["config"][string] = config[kind];
        if (kind === "resource" || kind === "data") {
          // Keyed by type, then name: files add names to a type.
          merged[key] ??= {};
          const byName = merged[key] as Record<string, Body[]>;
          for (const [name, bodies] of Object.entries(value as Record<string, Body[]>)) {
            assert.ok(!(name in byName), `${kind} ${key}.${name} is declared twice in ${dir}`);
            byName[name] = bodies;
          }
        } else if (kind === "locals" || kind === "terraform") {
          // Unlabelled blocks: a list per file, kept side by side.
          merged[`${file}#${key}`] = value;
        } else {
          assert.ok(!(key in merged), `${kind} "${key}" is declared twice in ${dir}`);
          merged[key] = value;
        }
      }
    }
  }
  return { files, config };
}

/** The single body of a block such as `module "route"`. */
export function block(dir: TerraformDir, kind: string, name: string): Body {
  const bodies = dir.config[kind]?.[name] as Body[] | undefined;
  assert.ok(bodies, `no ${kind} "${name}"`);
  assert.equal(bodies.length, 1);
  return bodies[0] as Body;
}

/** `resource "<type>" "<name>"` (or `data`, with kind "data"). */
export function resource(dir: TerraformDir, type: string, name: string, kind = "resource"): Body {
  const bodies = (dir.config[kind]?.[type] as Record<string, Body[]> | undefined)?.[name];
  assert.ok(bodies, `no ${kind} ${type}.${name}`);
  return bodies[0] as Body;
}

/** Every resource (or data source) of a folder: [type, name, body]. */
export function resources(dir: TerraformDir, kind = "resource"): [string, string, Body][] {
  return Object.entries((dir.config[kind] ?? {}) as Record<string, Record<string, Body[]>>).flatMap(
    ([type, byName]) =>
      Object.entries(byName).map(([name, bodies]) => [type, name, bodies[0] as Body] as const),
  ) as [string, string, Body][];
}

/** The locals of a folder, merged across its files. */
export function locals(dir: TerraformDir): Body {
  return Object.assign({}, ...Object.values(dir.config.locals ?? {})) as Body;
}

/** A nested block by path, e.g. nested(service, "template", "containers"). */
export function nested(body: Body, ...path: string[]): Body {
  let current = body;
  for (const key of path) {
    const value = current[key];
    assert.ok(Array.isArray(value) && value.length === 1, `expected one ${key} block`);
    current = value[0] as Body;
  }
  return current;
}

/** How hcl2json writes an expression attribute: "${<expression>}". */
export const expr = (expression: string) => `$\{${expression}}`;

/** The HCL source of an expression attribute as hcl2json gives it ("${<expression>}"). */
export const source = (value: unknown) => {
  const text = String(value);
  assert.ok(text.startsWith("${") && text.endsWith("}"), `not an expression: ${text}`);
  return text.slice(2, -1);
};

export const withoutComments = (text: string) => text.replace(/^\s*(#|\/\/).*$/gm, "");
