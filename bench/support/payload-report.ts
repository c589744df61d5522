// The payload section's tables (Markdown, to go into PERFORMANCE.md as they are), its
// gRPC / JSON ratios per size, and the size from which gRPC is ahead, if any.
import { type PayloadRow, type Protocol, protocolNames } from "../payload.js";

const thousands = (value: number) => value.toLocaleString("en-US");
const ms = (us: number) => (us / 1000).toFixed(us < 10_000 ? 2 : 1);
const markdown = (header: string[], lines: string[][]) =>
  [header, header.map(() => "---"), ...lines].map((cells) => `| ${cells.join(" | ")} |`).join("\n");

export function formatPayloadTable(rows: PayloadRow[]): string {
  return markdown(
    [
      "size",
      "features",
      "protobuf B",
      "JSON B",
      "protocol",
      "calls/s",
      "MB/s",
      "CPU µs/call",
      "CPU ns/B",
      "p99 ms",
      "errors",
    ],
    rows.map((row) => [
      row.label,
      thousands(row.pageSize),
      thousands(row.protobufBytes),
      thousands(row.jsonBytes),
      protocolNames[row.protocol],
      thousands(row.callsPerSecond),
      row.payloadMBPerSecond.toFixed(2),
      thousands(Math.round(row.cpuUsPerCall)),
      row.cpuNsPerByte.toFixed(row.cpuNsPerByte < 10 ? 2 : 1),
      ms(row.p99Us),
      String(row.errors),
    ]),
  );
}

export interface PayloadComparison {
  label: string;
  against: Exclude<Protocol, "grpc">;
  /** gRPC's calls/s over JSON's: above 1, gRPC serves more. */
  callsRatio: number;
  /** gRPC's CPU per byte over JSON's (the same bytes, so also per call): below 1, gRPC costs less. */
  cpuPerByteRatio: number;
}

export function payloadComparisons(rows: PayloadRow[]): PayloadComparison[] {
  const comparisons: PayloadComparison[] = [];
  for (const grpc of rows.filter((row) => row.protocol === "grpc")) {
    for (const against of ["json-h1", "json-h2"] as const) {
      const json = rows.find((row) => row.label === grpc.label && row.protocol === against);
      if (!json) continue;
      comparisons.push({
        label: grpc.label,
        against,
        callsRatio: Number((grpc.callsPerSecond / Math.max(1, json.callsPerSecond)).toFixed(2)),
        cpuPerByteRatio: Number((grpc.cpuNsPerByte / json.cpuNsPerByte).toFixed(2)),
      });
    }
  }
  return comparisons;
}

export function formatComparisonTable(comparisons: PayloadComparison[]): string {
  const labels = [...new Set(comparisons.map((comparison) => comparison.label))];
  const of = (label: string, against: PayloadComparison["against"]) =>
    comparisons.find((comparison) => comparison.label === label && comparison.against === against);
  const cell = (value: number | undefined) => (value === undefined ? "?" : value.toFixed(2));
  return markdown(
    [
      "size",
      "calls/s gRPC / JSON-h1",
      "calls/s gRPC / JSON-h2",
      "CPU per byte gRPC / JSON-h1",
      "CPU per byte gRPC / JSON-h2",
    ],
    labels.map((label) => [
      label,
      cell(of(label, "json-h1")?.callsRatio),
      cell(of(label, "json-h2")?.callsRatio),
      cell(of(label, "json-h1")?.cpuPerByteRatio),
      cell(of(label, "json-h2")?.cpuPerByteRatio),
    ]),
  );
}

/**
 * Where gRPC is ahead, given whether it is ahead at each size (smallest first): "at every size",
 * "from <size> on" (ahead there and at every larger size), "only at <sizes>" (ahead somewhere,
 * but not at the largest), or "at no size".
 */
export function whereAhead(labels: string[], ahead: boolean[]): string {
  let from = ahead.length;
  while (from > 0 && ahead[from - 1]) from -= 1;
  if (ahead.length > 0 && from === 0) return "at every size";
  if (from < ahead.length) return `from ${labels[from]} on`;
  const some = labels.filter((_, index) => ahead[index]);
  return some.length > 0 ? `only at ${some.join(", ")}` : "at no size";
}

/** The summary: where gRPC overtakes each JSON server, in calls/s and in CPU per byte. */
export function overtakes(comparisons: PayloadComparison[]): {
  callsPerSecond: Record<PayloadComparison["against"], string>;
  cpuPerByte: Record<PayloadComparison["against"], string>;
  text: string;
} {
  const where = (
    against: PayloadComparison["against"],
    ahead: (c: PayloadComparison) => boolean,
  ) => {
    const list = comparisons.filter((comparison) => comparison.against === against);
    return whereAhead(
      list.map((comparison) => comparison.label),
      list.map(ahead),
    );
  };
  const callsPerSecond = {
    "json-h1": where("json-h1", (c) => c.callsRatio > 1),
    "json-h2": where("json-h2", (c) => c.callsRatio > 1),
  };
  const cpuPerByte = {
    "json-h1": where("json-h1", (c) => c.cpuPerByteRatio < 1),
    "json-h2": where("json-h2", (c) => c.cpuPerByteRatio < 1),
  };
  const largest = comparisons.at(-1)?.label ?? "";
  const text = `gRPC ahead of JSON on this machine (sizes up to ${largest}): in calls/s ${callsPerSecond["json-h1"]} against HTTP/1.1, ${callsPerSecond["json-h2"]} against h2c; in CPU per byte ${cpuPerByte["json-h1"]} against HTTP/1.1, ${cpuPerByte["json-h2"]} against h2c`;
  return { callsPerSecond, cpuPerByte, text };
}
