// Benchmark: how long the controller's management work holds its event loop (the longest stretch in which
// no ping or fault could be answered), per operation, on a real store with a 1 TiB thick disk of 1 MiB
// segments (1,048,576 entries). The rule is ~50 ms; run by `npm run bench` on the host, or on its own:
// node dist/bench/stalls.js [GiB]. Times are measured here, never asserted in tests.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import { pathToFileURL } from 'node:url';
import { checkStore } from '../controller/check.js';
import { SegmentIo } from '../controller/segment-io.js';
import { Store } from '../controller/store.js';

export interface StallRow { op: string; ms: number; maxStallMs: number }

const MiB = 1 << 20;

export async function stallBench(o: { gib?: number; log?: (m: string) => void } = {}): Promise<{ segments: number; rows: StallRow[] }> {
  const gib = o.gib ?? 1024;
  const log = o.log ?? (() => {});
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vdisk-stalls-'));
  const store = await Store.open(dir);
  const io = new SegmentIo(store);
  const rows: StallRow[] = [];
  // 1 ms resolution: the histogram's max is the longest the loop went without running a timer.
  const h = monitorEventLoopDelay({ resolution: 1 });
  const measure = async (op: string, fn: () => Promise<unknown>) => {
    h.reset();
    h.enable();
    const t0 = performance.now();
    await fn();
    const ms = performance.now() - t0;
    h.disable();
    rows.push({ op, ms: Number(ms.toFixed(1)), maxStallMs: Number((h.max / 1e6).toFixed(1)) });
    log(`${op}: ${ms.toFixed(0)} ms, longest stall ${(h.max / 1e6).toFixed(1)} ms`);
  };
  try {
    for (const name of ['c1', 'c2']) {
      const file = path.join(dir, `${name}.img`);
      fs.writeFileSync(file, '');
      fs.truncateSync(file, (gib + 1) * 1024 * MiB);
      await store.addContainer(name, file, (gib + 1) * 1024 * MiB);
    }
    const zero = (c: number, off: number, len: number) => io.zero(c, off, len);
    await measure(`create --thick ${gib} GiB`, () => store.createDisk({ name: 'big', size: gib * 1024 * MiB, segmentSize: MiB, container: 'c1', thick: true, zero }));
    await measure('info', () => store.diskInfo('big'));
    await measure('check', () => checkStore(store));
    await measure('snapshot', () => store.cow.snapshot('big', 'snap'));
    await measure('clone', () => store.cow.clone('snap', 'copy'));
    await measure('info of the clone', () => store.diskInfo('copy'));
    await measure('check with 3 disks', () => checkStore(store));
    await measure('rm clone', () => store.removeDisk('copy'));
    await measure('container fail', () => store.failContainer('c2'));
    return { segments: (gib * 1024 * MiB) / MiB, rows };
  } finally {
    io.close();
    await store.close().catch(() => {});
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

export function printStalls(r: { segments: number; rows: StallRow[] }): void {
  console.log(`\ncontroller event-loop stalls, ${r.segments} segments (rule: ~50 ms)`);
  console.log(`${'operation'.padEnd(28)}${'ms'.padStart(10)}${'longest stall ms'.padStart(20)}`);
  for (const row of r.rows) console.log(`${row.op.padEnd(28)}${String(row.ms).padStart(10)}${String(row.maxStallMs).padStart(20)}`);
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const gib = process.argv[2] ? Number(process.argv[2]) : undefined;
  const r = await stallBench({ gib, log: (m) => console.error(`bench: ${m}`) });
  printStalls(r);
  console.log(JSON.stringify(r));
}
