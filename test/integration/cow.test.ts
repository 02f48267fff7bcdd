// Copy-on-write on the real kernel: partial writes after a snapshot go to alternate blocks (--partial bitmap)
// under fio verify, reads merge them, `vdisk fold` makes them plain; copy-out keeps the writer's segment and
// moves the snapshot; a whole-segment overwrite; and kill -9 of the controller while copy-on-write faults are
// being answered, then restart: fio's verify passes, the snapshots are unchanged, `vdisk check` is clean. And
// copy-on-write in the agent itself (grants that allow it): whole segments, and parts of them with --partial copy.
import t from 'tap';
import crypto from 'node:crypto';
import { Cluster } from './cluster.js';
import { fioVerify, readDirect, ublkAvailable, writeDirect } from './helpers.js';

const missing = ublkAvailable();
if (missing) t.fail(`needs a real ublk kernel: ${missing}`);
const MB = 1 << 20;

interface Info { alternates: number; entriesByState: Record<string, number>; sharedBytes: number; exclusiveBytes: number }
const sha = (b: Buffer) => crypto.createHash('sha256').update(b).digest('hex');

t.test('bitmap: 4k writes after a snapshot go to alternate blocks; reads merge; fold', async (t) => {
  const c = await Cluster.start('vd-cow-bitmap');
  t.teardown(() => c.stop());
  await c.container('c1', '256M');
  await c.ok('create', 'd', '--size', '8M');
  const dev = await c.attach('d', 'h1', '--queues', '2');
  const base = crypto.randomBytes(8 * MB);
  writeDirect(dev, 0, base);
  await c.ok('snapshot', 'd', 's');
  const f = fioVerify(dev, '8M', ['--number_ios=32']);
  t.equal(await f.done, 0, `fio's verify passed over alternate blocks\n${f.out()}`);
  const info = (await c.json<Info>('info', 'd'));
  t.ok(info.alternates > 0, `segments with alternate blocks: ${info.alternates}`);
  const after = readDirect(dev, 0, 8 * MB);
  t.not(sha(after), sha(base), 'the disk changed');
  const s = await c.attach('s');
  t.equal(sha(readDirect(s, 0, 8 * MB)), sha(base), 'the snapshot reads exactly the data before it');
  const k = await c.vdisk('fold', 'd', '--json');
  t.equal(k.status, 0, `fold: ${k.out} ${k.err}`);
  t.equal((await c.json<Info>('info', 'd')).alternates, 0, 'nothing left to fold');
  t.equal(sha(readDirect(dev, 0, 8 * MB)), sha(after), 'folding changed no byte the host sees');
  t.equal(sha(readDirect(s, 0, 8 * MB)), sha(base), 'nor the snapshot');
  t.equal(...(await c.check()));
});

t.test('copy-out: stomp the origin, the snapshot keeps its data; a whole-segment overwrite', async (t) => {
  const c = await Cluster.start('vd-cow-out');
  t.teardown(() => c.stop());
  await c.container('c1', '256M');
  await c.ok('create', 'o', '--size', '8M', '--segment-size', '256K', '--cow', 'copy-out');
  const dev = await c.attach('o');
  const A = crypto.randomBytes(4 * MB);
  writeDirect(dev, 0, A);
  await c.ok('snapshot', 'o', 'snap');
  const s = await c.attach('snap');
  const B = crypto.randomBytes(4096);
  writeDirect(dev, MB + 8192, B); // copy-out: the snapshot moves, the origin writes in place
  const W = crypto.randomBytes(256 * 1024);
  writeDirect(dev, 2 * MB, W); // a whole 256 KiB segment
  const expect = Buffer.from(A);
  B.copy(expect, MB + 8192);
  W.copy(expect, 2 * MB);
  t.ok(readDirect(dev, 0, 4 * MB).equals(expect), 'the origin reads its new data over A');
  t.ok(readDirect(s, 0, 4 * MB).equals(A), 'the attached snapshot still reads A everywhere');

  // Redirect: a whole-segment overwrite gets a fresh segment (nothing copied), a partial one its blocks.
  await c.ok('create', 'r', '--size', '8M', '--segment-size', '256K');
  const r = await c.attach('r');
  writeDirect(r, 0, A);
  await c.ok('snapshot', 'r', 'r-snap');
  writeDirect(r, 2 * MB, W);
  writeDirect(r, MB + 8192, B);
  t.ok(readDirect(r, 0, 4 * MB).equals(expect), 'the redirect disk reads its new data over A');
  t.ok(readDirect(await c.attach('r-snap'), 0, 4 * MB).equals(A), 'its snapshot still reads A');
  t.match((await c.json<Info>('info', 'r')), { alternates: 1 }, 'the partial write went to alternate blocks');
  t.equal(...(await c.check()));
});

t.test('copy-on-write in the agent: whole-segment and --partial copy writes after a snapshot take grants, not faults', async (t) => {
  const c = await Cluster.start('vd-cow-claims');
  t.teardown(() => c.stop());
  await c.container('c1', '256M');
  await c.ok('create', 'o', '--size', '8M');
  const o = await c.attach('o');
  const A = crypto.randomBytes(8 * MB);
  writeDirect(o, 0, A);
  await c.ok('detach', 'o');
  await c.ok('snapshot', 'o', 's');
  await c.ok('clone', 's', 'k', '--partial', 'copy');
  const k = await c.attach('k', 'h1', '--queues', '2');
  type Stats = { faults: Record<string, { count: number }>; diskStats: Array<{ name: string; hosts: Array<{ grants: { held: number; claims: number } | null }> }> };
  const stats = () => c.json<Stats>('stats');
  const pool = async () => (await stats()).diskStats.find((d) => d.name === 'k')?.hosts[0]?.grants ?? null;
  // The grants asked for at attach carry the rule: once they are held, no write below needs the controller.
  await c.until('k\'s first grants', async () => ((await pool())?.held ?? 0) > 0);
  const faults0 = (await stats()).faults.write?.count ?? 0;
  const claims0 = (await pool())!.claims;
  const expect = Buffer.from(A);
  const W = crypto.randomBytes(MB);
  writeDirect(k, 2 * MB, W); // segment 2 whole: nothing copied
  W.copy(expect, 2 * MB);
  const P = crypto.randomBytes(256 * 1024);
  writeDirect(k, 5 * MB + 256 * 1024, P); // part of segment 5: the rest copied from the shared segment
  P.copy(expect, 5 * MB + 256 * 1024);
  const Q = crypto.randomBytes(4096);
  writeDirect(k, 7 * MB + 8192, Q);
  Q.copy(expect, 7 * MB + 8192);
  t.ok(readDirect(k, 0, 8 * MB).equals(expect), 'the clone reads its new data over the snapshot\'s');
  t.equal(((await stats()).faults.write?.count ?? 0) - faults0, 0, 'no write faulted: the agent copied on write itself');
  await c.until('the three claims', async () => (await pool())!.claims - claims0 >= 3);
  t.equal((await pool())!.claims - claims0, 3, 'three copy-on-write claims');
  t.ok(readDirect(await c.attach('s'), 0, 8 * MB).equals(A), 'the snapshot still reads its data');
  // The claims reached the controller: a new device, its table loaded from the store, reads the same.
  await c.ok('detach', 'k');
  t.ok(readDirect(await c.attach('k'), 0, 8 * MB).equals(expect), 'reattached, the clone reads the same');
  t.match(await c.json<Info>('info', 'k'), { alternates: 0 }, 'no alternate blocks: whole segments were copied');
  t.equal(...(await c.check()));
});

t.test('kill -9 of the controller while copy-on-write faults are answered', async (t) => {
  const c = await Cluster.start('vd-cow-kill');
  t.teardown(() => c.stop());
  await c.container('c1', '512M');
  await c.ok('create', 'r', '--size', '8M', '--partial', 'copy'); // redirect, whole-segment copies
  await c.ok('create', 'b', '--size', '8M'); // redirect, alternate blocks
  await c.ok('create', 'o', '--size', '8M', '--cow', 'copy-out');
  const disks = ['r', 'b', 'o'];
  const devs: string[] = [];
  for (const d of disks) devs.push(await c.attach(d, 'h1', '--queues', '2'));
  const base = disks.map(() => crypto.randomBytes(8 * MB));
  devs.forEach((dev, i) => writeDirect(dev, 0, base[i]));
  for (const d of disks) await c.ok('snapshot', d, `${d}-snap`);
  const snaps: string[] = [];
  for (const d of disks) snaps.push(await c.attach(`${d}-snap`));
  const pid = await c.controllerPid();
  const jobs = devs.map((dev) => fioVerify(dev, '8M', ['--number_ios=40', '--rate_iops=10']));
  // Kill once every disk has had copy-on-write faults answered, while every fio is still writing.
  await c.until('copy-on-write faults answered on every disk', async () => {
    for (const d of disks) {
      const i = await c.json<Info>('info', d);
      if (i.exclusiveBytes === 0 && i.alternates === 0) return false;
    }
    return true;
  });
  t.same(jobs.map((j) => j.finished()), [false, false, false], 'every fio is still writing when the controller is killed');
  process.kill(pid, 'SIGKILL');
  t.equal((await c.vdisk('controller', 'start')).status, 0, 'the controller restarts');
  for (let i = 0; i < disks.length; i++) {
    t.equal(await jobs[i].done, 0, `${disks[i]}: fio's verify passed across the controller's death\n${jobs[i].out()}`);
  }
  for (let i = 0; i < disks.length; i++) t.equal(sha(readDirect(snaps[i], 0, 8 * MB)), sha(base[i]), `${disks[i]}-snap: unchanged`);
  t.equal(...(await c.check()));
});
