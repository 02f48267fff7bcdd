// The bench's stand-in agent (src/bench/session.ts) against a real in-process controller: it must take a real
// attach (table created and bulk-loaded through the agent's real table) and real allocating faults, or the
// host rows of `npm run bench` would time something else. Also the option parser and the row format.
import t from 'tap';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Controller } from '../../src/controller/controller.js';
import type { DiskInfo } from '../../src/controller/store.js';
import { attachWithoutDevice } from '../../src/bench/host-controller.js';
import { parseBenchArgs } from '../../src/bench/options.js';
import { printRows, ratioRow } from '../../src/bench/report.js';
import { BenchSession, scattered } from '../../src/bench/session.js';
import { STATE_ZERO } from '../../src/table/mapping-table.js';

const MiB = 1 << 20;
const SEGMENTS = 64;

t.test('attach without device and faults through the stand-in agent', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vdisk-bench-standin-'));
  const s = new BenchSession(path.join(dir, 'data'));
  fs.mkdirSync(s.dataDir, { recursive: true, mode: 0o700 });
  const controller = await Controller.start(s.dataDir);
  t.teardown(async () => {
    await controller.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  await s.rpc('container.add', { name: 'c1', path: path.join(dir, 'c1.img'), size: SEGMENTS * MiB });
  await s.rpc('disk.create', { name: 'd1', size: SEGMENTS * MiB, segmentSize: MiB });

  const a = await attachWithoutDevice(s, 'd1');
  t.equal(a.entries, SEGMENTS, 'the controller bulk-loaded every entry into the stand-in\'s table');
  t.ok(a.tableSetAtMs >= a.tableCreateAtMs && a.deviceStartAtMs >= a.tableSetAtMs, 'create, load, then device start');

  const r = await s.faults('d1', 8, 24, 6);
  t.equal(r.faults, 24);
  const info = (await s.rpc<DiskInfo>('disk.info', { name: 'd1' })).result;
  t.equal(info.allocatedBytes, 24 * MiB, 'one segment allocated per fault');
  t.equal(info.entriesByState.zero, SEGMENTS - 24);

  // A disk attached to the stand-in gets the real table: its entries turn from Zero to mapped as faults answer.
  const agent = await s.standIn();
  t.teardown(() => agent.close());
  await s.rpc('disk.attach', { name: 'd1', hostId: 'bench-nodevice', queues: 1, depth: 8 });
  const table = [...agent.tables.values()][0];
  t.ok(table, 'the stand-in holds the table');
  t.equal(table!.load(0) & STATE_ZERO, STATE_ZERO, 'segment 0 was never written');
  t.equal(table!.load(8) & STATE_ZERO, 0, 'segment 8 is mapped');
  await s.rpc('disk.detach', { name: 'd1', hostId: 'bench-nodevice', force: false });
});

t.test('the fault order: every segment once, no two neighbours back to back (nothing looks sequential)', async (t) => {
  for (const n of [24, 256, 2048, 1000]) {
    const o = scattered(n);
    t.same([...o].sort((a, b) => a - b), Array.from({ length: n }, (_, i) => i), `${n}: a permutation`);
    t.ok(o.every((x, i) => i === 0 || Math.abs(x - o[i - 1]!) > 1), `${n}: no neighbours in a row`);
  }
});

t.test('options: defaults follow --runtime, bad values are refused', async (t) => {
  const { opts } = parseBenchArgs(['--runtime', '5', '--no-stalls']);
  t.match(opts, { runtime: 5, rounds: 2, faults: 80, hostFaults: 640, cows: 80, stalls: false, loop: true });
  t.match(parseBenchArgs([]).opts, { faults: 256, hostFaults: 2048 }, 'the host\'s rows take 2,048 faults by default');
  t.match(parseBenchArgs(['--faults', '100']).opts, { faults: 100, hostFaults: 100 }, '--faults sets both');
  t.throws(() => parseBenchArgs(['--rounds', '0']), { code: 'EINVAL' });
  t.throws(() => parseBenchArgs(['--bogus']));
});

t.test('rows: a ratio row judges its target; the table prints one line per row', async (t) => {
  const ok = ratioRow('s', 'VM', 'x', 90, 100, 'IOPS', 0.8);
  t.match(ok, { value: '90 / 100 IOPS = 0.90', figure: 0.9, target: '>= 0.80', met: true });
  t.equal(ratioRow('s', 'VM', 'x', 70, 100, 'IOPS', 0.8).met, false);
  t.equal(ratioRow('s', 'VM', 'x', 70, 100, 'IOPS').met, undefined, 'no target, not judged');
  const lines: string[] = [];
  printRows([ok, { section: 't', where: 'host', name: 'y', value: '1 s' }], (l) => lines.push(l));
  t.equal(lines.filter((l) => l.startsWith('== ')).length, 2, 'one heading per section');
  t.ok(lines.some((l) => /^x\s+VM\s+90 \/ 100 IOPS = 0\.90\s+>= 0\.80\s+yes$/.test(l)), lines.join('\n'));
});
