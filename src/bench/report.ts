// The bench's one output format: every measurement is a Row (what, where it ran, the value as printed, the
// target and whether it was met), printed as one table and kept in the JSON report beside the raw sections.
// Helpers for the numbers the parts share (median, mean, rounding) live here too.
import fs from 'node:fs';
import path from 'node:path';

/** host: natively on this machine (no ublk needed); VM: in the QEMU guest; native: on a ublk host. */
export type Where = 'host' | 'VM' | 'native';

export interface Row {
  section: string;
  name: string;
  where: Where;
  /** As printed: the number with its unit, or "a / b = ratio". */
  value: string;
  /** The number the target applies to (a ratio, a rate), when there is one. */
  figure?: number;
  target?: string;
  /** undefined: no target, or not judged (TCG times). */
  met?: boolean;
}

export interface Report {
  date: string;
  rows: Row[];
  [section: string]: unknown;
}

export const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;
export const mean = (xs: number[]): number => xs.reduce((a, b) => a + b, 0) / xs.length;
export const round = (x: number, d = 3): number => Number(x.toFixed(d));
export const sec = (ms: number): string => `${(ms / 1000).toFixed(3)} s`;
export const thousands = (x: number): string => Math.round(x).toLocaleString('en-US');
export const ratioText = (a: number, b: number, unit: string): string => `${thousands(a)} / ${thousands(b)} ${unit} = ${(a / b).toFixed(2)}`;

/** A ratio row: a over b against a lower bound (met when the ratio reaches it). */
export function ratioRow(section: string, where: Where, name: string, a: number, b: number, unit: string, atLeast?: number): Row {
  const r = a / b;
  const row: Row = { section, name, where, value: ratioText(a, b, unit), figure: round(r) };
  if (atLeast !== undefined) {
    row.target = `>= ${atLeast.toFixed(2)}`;
    row.met = r >= atLeast;
  }
  return row;
}

/** Whether we run inside the bench VM, natively on a ublk host, or on the host without ublk. */
export function whereAmI(): Where {
  return process.env.VDISK_IN_VM === '1' ? 'VM' : fs.existsSync('/dev/ublk-control') ? 'native' : 'host';
}

export function printRows(rows: Row[], out: (line: string) => void = (l) => console.log(l)): void {
  const met = (r: Row) => (r.met === undefined ? '' : r.met ? 'yes' : 'NO');
  const cols = [
    ['measurement', ...rows.map((r) => r.name)],
    ['where', ...rows.map((r) => r.where)],
    ['value', ...rows.map((r) => r.value)],
    ['target', ...rows.map((r) => r.target ?? '')],
    ['met', ...rows.map(met)],
  ];
  const w = cols.map((c) => Math.max(...c.map((s) => s.length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === 2 ? c.padStart(w[i]!) : c.padEnd(w[i]!))).join('  ').trimEnd();
  let section = '';
  for (let i = 0; i < rows.length; i++) {
    const r = rows[i]!;
    if (r.section !== section) {
      section = r.section;
      out('');
      out(`== ${section}`);
      out(line(cols.map((c) => c[0]!)));
    }
    out(line(cols.map((c) => c[i + 1]!)));
  }
}

export function writeReport(file: string, report: Report): void {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, JSON.stringify(report, null, 2) + '\n');
}
