// The durability rule of thin faults, under a power cut: the controller commits a new mapping without an fsync
// of its own and makes it durable before the next FLUSH or FUA write of the disk completes (disk.sync). The
// controller's data dir and containers sit on ext4 over dm-flakey; the cut makes it drop every write from
// then on, the daemons are killed, and the file system is mounted again as a power cycle would leave it.
import t from 'tap';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { Cluster } from './cluster.js';
import { WORK, alive, makeFile, readDirect, run, ublkAvailable, writeDirect } from './helpers.js';

const missing = ublkAvailable();
if (missing) t.fail(`needs a real ublk kernel: ${missing}`);

const MB = 1 << 20;
const dm = (args: string[]) => {
  const r = spawnSync('dmsetup', args, { encoding: 'utf8', env: { ...process.env, DM_DISABLE_UDEV: '1' } });
  if (r.status !== 0) throw new Error(`dmsetup ${args.join(' ')}: ${r.stderr}`);
};
interface Stats { faults: Record<string, { count: number } | undefined> }
const syncs = async (c: Cluster) => (await c.json<Stats>('stats')).faults.sync?.count ?? 0;

t.test('a FLUSH and a FUA write make the mappings they rely on survive a power cut; later ones may go, never to garbage', async (t) => {
  const file = makeFile('power-cut', 512 * MB);
  const loop = run('losetup', ['-f', '--show', file]).trim();
  const name = `vd-pc-${process.pid}`;
  const sectors = (512 * MB) / 512;
  const up = `0 ${sectors} linear ${loop} 0`;
  dm(['create', name, '--table', up]);
  const mnt = fs.mkdtempSync(path.join(WORK, 'vd-pc-mnt-'));
  run('mkfs.ext4', ['-q', '-F', `/dev/mapper/${name}`]);
  run('mount', [`/dev/mapper/${name}`, mnt]);
  const held: { c?: Cluster } = {};
  t.teardown(async () => {
    await held.c?.stop().catch((err: Error) => t.comment(`stop: ${err.message}`));
    spawnSync('umount', [mnt]);
    fs.rmSync(mnt, { recursive: true, force: true });
    spawnSync('dmsetup', ['remove', '--force', name], { env: { ...process.env, DM_DISABLE_UDEV: '1' } });
    run('losetup', ['-d', loop]);
    fs.rmSync(file, { force: true });
  });

  const c = await Cluster.start('vd-pc', mnt);
  held.c = c;
  await c.container('c1', '256M');
  await c.ok('create', 'pc', '--size', '64M');
  await c.ok('agent', 'start', '--host-id', 'h1');
  const dev = await c.attach('pc');

  // A: first writes into Zero segments, then a FLUSH of the device.
  const a = crypto.randomBytes(8 * MB);
  writeDirect(dev, 0, a);
  const before = await syncs(c);
  run('dd', [`of=${dev}`, 'count=0', 'conv=fsync,notrunc', 'status=none']);
  t.ok(await syncs(c) > before, 'the FLUSH made the controller commit the mappings durably (a disk.sync that committed)');
  // D: a FUA write into a Zero segment: its own mapping is durable when it completes.
  const d = crypto.randomBytes(MB);
  const mid = await syncs(c);
  writeDirect(dev, 56 * MB, d, ['dsync']); // far from where A's writes may have had segments mapped ahead
  t.ok(await syncs(c) > mid, 'the FUA write waited for a disk.sync that committed its mapping');
  // B: first writes nobody flushed.
  const b = crypto.randomBytes(8 * MB);
  writeDirect(dev, 32 * MB, b);

  // The cut: from now on the disk under the data dir and the containers keeps nothing; then everything dies.
  const pids = [await c.controllerPid(), await c.agentPid('h1')];
  dm(['suspend', '--noflush', '--nolockfs', name]);
  dm(['load', name, '--table', `0 ${sectors} flakey ${loop} 0 0 3600 1 drop_writes`]);
  dm(['resume', name]);
  for (const pid of pids) process.kill(pid, 'SIGKILL');
  await c.until('the daemons to be gone', () => pids.every((p) => !alive(p)));
  run('umount', [mnt]); // what the page cache still held goes to the flakey device, which drops it
  dm(['suspend', name]);
  dm(['load', name, '--table', up]);
  dm(['resume', name]);
  run('mount', [`/dev/mapper/${name}`, mnt]);

  await c.ok('controller', 'start');
  await c.ok('agent', 'start', '--host-id', 'h1');
  await c.until('the disk to be served again', async () => (await c.json<Array<{ disks: string[] }>>('agent', 'ls'))[0]?.disks.includes('pc') ?? false);
  t.ok(readDirect(dev, 0, 8 * MB).equals(a), 'what was written before the FLUSH reads back');
  t.ok(readDirect(dev, 56 * MB, MB).equals(d), 'the FUA write reads back');
  const zero = Buffer.alloc(MB);
  let kept = 0;
  let lost = 0;
  for (let s = 0; s < 8; s++) {
    const got = readDirect(dev, 32 * MB + s * MB, MB);
    if (got.equals(b.subarray(s * MB, (s + 1) * MB))) kept++;
    else if (got.equals(zero)) lost++;
  }
  t.equal(kept + lost, 8, `each unflushed segment reads its data or zeros, nothing else (${kept} kept, ${lost} gone)`);
  t.equal(...await c.check());
});
