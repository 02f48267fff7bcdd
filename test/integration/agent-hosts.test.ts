// One disk attached on two agents at once (two host ids simulate two hosts): every write is visible to reads
// on the other host, including writes that allocate a new segment (the controller pushes the new entry to
// the other agent before it answers the writer). Also the Error state: a failed container gives EIO on
// exactly its segments, and the other disk keeps working.
import t from 'tap';
import crypto from 'node:crypto';
import { spawnSync } from 'node:child_process';
import type { StatsSnapshot } from '../../src/controller/metrics.js';
import { Cluster } from './cluster.js';
import { readDirect, ublkAvailable, writeDirect } from './helpers.js';

const missing = ublkAvailable();
if (missing) t.fail(`needs a real ublk kernel: ${missing}`);
const MB = 1 << 20;

function readFails(dev: string, off: number): string {
  const r = spawnSync('dd', [`if=${dev}`, 'bs=4096', `skip=${off / 4096}`, 'count=1', 'iflag=direct', 'status=none'], { encoding: 'utf8' });
  return r.status === 0 ? '' : r.stderr;
}

t.test('a disk on two hosts sees the same data', async (t) => {
  const c = await Cluster.start('vd-hosts');
  t.teardown(() => c.stop());
  await c.container('c1', '256M');
  await c.ok('create', 'shared', '--size', '64M');
  await c.ok('agent', 'start', '--host-id', 'ha');
  await c.ok('agent', 'start', '--host-id', 'hb');
  const a = await c.attach('shared', 'ha');
  const b = await c.attach('shared', 'hb');
  t.not(a, b, `two devices: ${a} on ha, ${b} on hb`);
  t.equal(readDirect(b, 7 * MB, 4096).equals(Buffer.alloc(4096)), true, 'hb reads zeros before any write');

  let first = Buffer.alloc(0); // what offset 128 KiB holds at the end
  for (let i = 0; i < 8; i++) {
    const [w, r] = i % 2 === 0 ? [a, b] : [b, a];
    const data = crypto.randomBytes(64 * 1024);
    const off = i * 3 * MB + 128 * 1024; // a fresh segment each time: the write faults and allocates
    writeDirect(w, off, data);
    t.ok(readDirect(r, off, data.length).equals(data), `write ${i} on ${w} (allocating) is read back on ${r}`);
    const again = crypto.randomBytes(4096);
    writeDirect(r, off, again);
    t.ok(readDirect(w, off, 4096).equals(again), `an overwrite on ${r} is read back on ${w}`);
    if (i === 0) first = again;
  }
  const info = (await c.json<{ allocatedBytes: number }>('info', 'shared'));
  t.equal(info.allocatedBytes, 8 * MB, 'both hosts\' writes share the 8 allocated segments');
  await c.ok('detach', 'shared', '--host-id', 'ha');
  t.ok(readDirect(b, 128 * 1024, 4096).equals(first), 'detaching one host leaves the other serving the same data');
});

t.test('Error state: a failed container gives EIO on its segments only', async (t) => {
  const c = await Cluster.start('vd-error');
  t.teardown(() => c.stop());
  await c.container('c1', '128M');
  await c.container('c2', '128M');
  await c.ok('create', 'd1', '--size', '32M', '--container', 'c1');
  await c.ok('create', 'd2', '--size', '32M', '--container', 'c2');
  const d1 = await c.attach('d1');
  const d2 = await c.attach('d2');
  const data = crypto.randomBytes(MB);
  for (const seg of [1, 2, 5]) writeDirect(d1, seg * MB, data);
  writeDirect(d2, 0, data);

  const out = await c.ok('container', 'fail', 'c1');
  t.match(out, /d1/, 'fail reports the disk it touched');
  for (const seg of [1, 2, 5]) t.match(readFails(d1, seg * MB + 4096), /Input\/output error/, `d1 segment ${seg} (on c1) gives EIO`);
  t.equal(readFails(d1, 3 * MB), '', 'd1 segment 3 (never written: Zero) still reads');
  t.ok(readDirect(d1, 3 * MB, 4096).equals(Buffer.alloc(4096)), 'as zeros');
  t.ok(readDirect(d2, 0, MB).equals(data), 'd2 on c2 still reads its data');
  const more = crypto.randomBytes(4096);
  writeDirect(d2, 9 * MB, more);
  t.ok(readDirect(d2, 9 * MB, 4096).equals(more), 'and still takes new writes');
  const info = (await c.json<{ entriesByState: Record<string, number> }>('info', 'd1'));
  t.equal(info.entriesByState.error, 3, 'vdisk info counts the 3 Error entries of d1');

  // vdisk stats: the table's Error entries, and the serving agent's own counters of the EIOs it returned.
  const stats = await c.json<StatsSnapshot>('stats');
  const s1 = stats.diskStats.find((d) => d.name === 'd1');
  const s2 = stats.diskStats.find((d) => d.name === 'd2');
  t.match(s1, { errorSegments: 3, allocatedBytes: 3 * MB, hosts: [{ hostId: 'h1', device: d1 }] }, 'stats: d1 has 3 Error segments');
  t.ok((s1?.hosts[0].io?.errors ?? 0) >= 3, `h1 counted the EIO reads of d1 (${s1?.hosts[0].io?.errors})`);
  t.ok((s1?.hosts[0].io?.writeBytes ?? 0) >= 3 * MB, 'and its 3 MiB of writes');
  t.match(s2, { errorSegments: 0, hosts: [{ hostId: 'h1', device: d2, io: { errors: 0 } }] }, 'd2: no Error segment, no I/O error');
  t.ok((s2?.hosts[0].io?.writeBytes ?? 0) >= MB + 4096, `d2's writes counted (${s2?.hosts[0].io?.writeBytes} bytes)`);
});
