// The hops table (Markdown, so it can go into the README as it is) and the targets of issue 7.
import type { HopRow } from "../hops.js";
import type { RemoteRow } from "../remote.js";

const thousands = (value: number) => value.toLocaleString("en-US");
const ms = (us: number) => (us / 1000).toFixed(us < 10_000 ? 2 : 1);

/** `value` over the same figure of the row's baseline (same run, same concurrency). */
function timesBaseline(rows: HopRow[], row: HopRow, figure: (row: HopRow) => number): string {
  const base = row.baseline
    ? rows.find((other) => other.scenario === row.baseline && other.concurrency === row.concurrency)
    : undefined;
  if (!row.baseline) return "";
  if (!base || figure(base) === 0) return " (× ?)";
  return ` (× ${(figure(row) / figure(base)).toFixed(2)})`;
}

export function formatHopTable(rows: HopRow[]): string {
  const header = [
    "row",
    "c",
    "rate /s",
    "× baseline",
    "p50 ms",
    "p90 ms",
    "p99 ms (× baseline)",
    "CPU µs/call (× baseline; per process)",
    "peak RSS MiB",
    "h2load µs/call",
  ];
  const lines = rows.map((row) => [
    row.scenario,
    String(row.concurrency),
    `${thousands(row.rate)} ${row.unit}`,
    row.ratio === null ? "1" : row.ratio.toFixed(2),
    ms(row.p50Us),
    ms(row.p90Us),
    `${ms(row.p99Us)}${timesBaseline(rows, row, (r) => r.p99Us)}`,
    `${thousands(row.cpuUsPerCallTotal)}${timesBaseline(rows, row, (r) => r.cpuUsPerCallTotal)}; ${Object.entries(
      row.cpuUsPerCall,
    )
      .map(([name, value]) => `${name} ${thousands(value)}`)
      .join(", ")}`,
    Object.entries(row.peakRssMiB)
      .map(([name, value]) => `${name} ${value}`)
      .join(", "),
    String(row.generatorCpuUsPerCall),
  ]);
  const table = [header, header.map(() => "---"), ...lines];
  return table.map((cells) => `| ${cells.join(" | ")} |`).join("\n");
}

/** A remote row's failed calls: "0", or "12 (429 × 12)" with the HTTP statuses h2load saw. */
export function formatErrors(row: Pick<RemoteRow, "errors" | "failedStatuses">): string {
  const statuses = Object.entries(row.failedStatuses)
    .map(([status, count]) => `${status} × ${count}`)
    .join(", ");
  return statuses ? `${row.errors} (${statuses})` : String(row.errors);
}

/**
 * The rows of `pnpm bench --gateway` in the hop table's style: no baseline and no CPU per
 * process (the processes are not this machine's), h2load's own CPU kept.
 */
export function formatRemoteTable(rows: RemoteRow[]): string {
  const header = ["row", "c", "rate /s", "p50 ms", "p90 ms", "p99 ms", "errors", "h2load µs/call"];
  // A row in which no call completed has no latencies and no cost per call.
  const none = "–";
  const lines = rows.map((row) => [
    row.scenario,
    String(row.concurrency),
    `${thousands(row.rate)} ${row.unit}`,
    row.calls > 0 ? ms(row.p50Us) : none,
    row.calls > 0 ? ms(row.p90Us) : none,
    row.calls > 0 ? ms(row.p99Us) : none,
    formatErrors(row),
    row.calls > 0 ? String(row.generatorCpuUsPerCall) : none,
  ]);
  const table = [header, header.map(() => "---"), ...lines];
  return table.map((cells) => `| ${cells.join(" | ")} |`).join("\n");
}

export interface TargetCheck {
  text: string;
  met: boolean;
  value: number | null;
}

function find(rows: HopRow[], scenario: string, concurrency: number): HopRow | undefined {
  return rows.find((row) => row.scenario === scenario && row.concurrency === concurrency);
}

/** The middle value (the mean of the two middle ones for an even count). */
export function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1
    ? (sorted[middle] as number)
    : ((sorted[middle - 1] as number) + (sorted[middle] as number)) / 2;
}

export function targets(rows: HopRow[]): TargetCheck[] {
  const checks: TargetCheck[] = [];
  const add = (text: string, value: number | undefined, wanted: (value: number) => boolean) => {
    if (value === undefined || !Number.isFinite(value)) return;
    const rounded = Number(value.toFixed(2));
    checks.push({ text: `${text}: ${rounded}`, met: wanted(value), value: rounded });
  };
  const b = "baseline B: bare grpc-js, 2 hops";
  const on = "GetFeature, gateway, auth on";
  const off = "GetFeature, gateway, auth off";
  // Rows measured in the same rounds (one group) compare round by round, the median of the
  // per-round ratios; others by their medians.
  const ratio = (x?: HopRow, y?: HopRow) => {
    if (!x || !y) return undefined;
    if (x.group === y.group && x.rateRuns.length > 0 && x.rateRuns.length === y.rateRuns.length) {
      return median(x.rateRuns.map((rate, round) => rate / Math.max(1, y.rateRuns[round] ?? 1)));
    }
    return x.rate / y.rate;
  };
  add(
    "gateway GetFeature with auth ≥ 0.8 × baseline B req/s at concurrency 64",
    ratio(find(rows, on, 64), find(rows, b, 64)),
    (value) => value >= 0.8,
  );
  for (const concurrency of [1, 16, 64]) {
    add(
      `auth on ≥ 0.95 × auth off (GetFeature, concurrency ${concurrency})`,
      ratio(find(rows, on, concurrency), find(rows, off, concurrency)),
      (value) => value >= 0.95,
    );
  }
  // Issue 17's targets.
  for (const method of ["ListFeatures", "RecordRoute"]) {
    add(
      `${method} through the gateway ≥ 0.8 × baseline B at concurrency 64`,
      ratio(find(rows, `${method}, gateway, auth on`, 64), find(rows, `${method}, ${b}`, 64)),
      (value) => value >= 0.8,
    );
  }
  const p99 = find(rows, on, 16);
  const p99B = find(rows, b, 16);
  add(
    "gateway GetFeature p99 at concurrency 16 ≤ 1.5 × baseline B's p99 (ratio)",
    p99 && p99B ? p99.p99Us / p99B.p99Us : undefined,
    (value) => value <= 1.5,
  );
  const counted = find(rows, on, 64);
  add(
    "stats CPU µs per counted GetFeature (auth on, concurrency 64) ≤ 30",
    counted?.cpuUsPerCall.stats,
    (value) => value <= 30,
  );
  const peaks = rows.filter((row) => row.peakRssMiB.stats !== undefined);
  add(
    "stats + its database peak RSS MiB under the bench ≤ 300",
    peaks.length > 0
      ? Math.max(
          ...peaks.map((row) => (row.peakRssMiB.stats ?? 0) + (row.peakRssMiB.database ?? 0)),
        )
      : undefined,
    (value) => value <= 300,
  );
  return checks;
}
