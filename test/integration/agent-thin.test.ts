// Controller-managed disks on the real kernel, through the CLI only: a thin disk allocates exactly the
// segments written (vdisk info), unwritten ranges read zeros, ext4 works on it; fio verify across two disks
// on two containers at once, and of a sequential writer whose next windows the agent's ahead hints map;
// removals that would lose data are refused while attached.
import t from 'tap';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { Cluster } from './cluster.js';
import { readDirect, run, sha256, ublkAvailable, writeDirect } from './helpers.js';

const missing = ublkAvailable();
if (missing) t.fail(`needs a real ublk kernel: ${missing}`);
const MB = 1 << 20;
interface Info { allocatedBytes: number; entriesByState: Record<string, number>; perContainer: Record<string, number> }

t.test('thin disks, ext4, two disks on two containers', async (t) => {
  const c = await Cluster.start('vd-thin');
  t.teardown(() => c.stop());
  await c.container('c1', '512M');
  await c.container('c2', '512M');
  await c.ok('create', 'd1', '--size', '256M', '--container', 'c1');
  await c.ok('create', 'd2', '--size', '128M', '--container', 'c2');
  const d1 = await c.attach('d1', 'h1', '--queues', '2');
  t.match(d1, /^\/dev\/ublkb\d+$/, `attach printed the device (${d1})`);
  t.ok(fs.statSync(d1).isBlockDevice(), 'and it is a block device');
  t.equal((await c.json<Info>('info', 'd1')).allocatedBytes, 0, 'a new thin disk has nothing allocated');

  t.ok(readDirect(d1, 0, 4 * MB).equals(Buffer.alloc(4 * MB)), 'unwritten segments read zeros');
  t.equal((await c.json<Info>('info', 'd1')).allocatedBytes, 0, 'reading allocates nothing');

  const block = crypto.randomBytes(4096);
  writeDirect(d1, 5 * MB + 8192, block);
  await c.allocated('d1', MB);
  let info = (await c.json<Info>('info', 'd1'));
  t.equal(info.allocatedBytes, MB, 'one 4 KiB write allocates one 1 MiB segment');
  t.same(info.perContainer, { c1: MB }, 'on the disk\'s container');
  const seg = readDirect(d1, 5 * MB, MB);
  const expect = Buffer.alloc(MB);
  block.copy(expect, 8192);
  t.ok(seg.equals(expect), 'the rest of a partially written segment reads zeros');

  // Both disks under fio verify at once: each allocates on its own container.
  const d2 = await c.attach('d2');
  // Global options first: fio applies options after a --name to that job only.
  run('fio', ['--rw=randwrite', '--bs=4k', '--iodepth=16', '--ioengine=libaio', '--direct=1', '--verify=crc32c', '--do_verify=1',
    '--verify_fatal=1', '--randrepeat=0', '--name=d1', `--filename=${d1}`, '--offset=64M', '--size=32M',
    '--name=d2', `--filename=${d2}`, '--size=32M']);
  t.pass('fio verify passed on two disks at once');
  // First writes into granted segments reach the store with the agent's next message, nobody waiting on it.
  const mapped = async (d: string) => Object.values((await c.json<Info>('info', d)).perContainer).reduce((a, b) => a + b, 0);
  await c.until('the claims of both disks to reach the controller', async () => await mapped('d1') >= 33 * MB && await mapped('d2') >= 32 * MB);
  info = (await c.json<Info>('info', 'd1'));
  t.same(info.perContainer, { c1: 33 * MB }, 'd1 allocated exactly the 32 segments fio wrote (+1) on c1');
  t.same((await c.json<Info>('info', 'd2')).perContainer, { c2: 32 * MB }, 'd2 allocated its 32 segments on c2');

  // A sequential writer: its first writes take segments granted ahead instead of faulting one by one.
  type Stats = { faults: Record<string, { count: number } | undefined>; grants: { claimed: number } };
  const stats = () => c.json<Stats>('stats');
  const before = await stats();
  run('fio', ['--name=seq', `--filename=${d1}`, '--rw=write', '--bs=1M', '--iodepth=1', '--ioengine=libaio', '--direct=1',
    '--offset=128M', '--size=48M', '--verify=crc32c', '--do_verify=1', '--verify_fatal=1']);
  await c.until('the sequential writer\'s claims to reach the controller', async () => await mapped('d1') >= (33 + 48) * MB);
  const after = await stats();
  const claims = after.grants.claimed - before.grants.claimed;
  const faults = (after.faults.write?.count ?? 0) - (before.faults.write?.count ?? 0);
  t.ok(claims >= 1, `fio verify passed on a sequential write: ${claims} of its 48 first writes were claims, ${faults} faulted`);
  const used = (await c.json<Info>('info', 'd1')).perContainer.c1!;
  t.ok(used >= (33 + 48) * MB && used <= 33 * MB + 128 * MB, `what it wrote and at most its windows ahead, to the disk's end (${used / MB} MiB)`);

  // ext4 with checksummed files, across a detach and re-attach.
  const mnt = fs.mkdtempSync(path.join(c.dir, 'mnt-'));
  run('mkfs.ext4', ['-q', '-F', '-E', 'nodiscard,lazy_itable_init=1,lazy_journal_init=1', d2]);
  run('mount', [d2, mnt]);
  const sums = new Map<string, string>();
  for (let i = 0; i < 6; i++) {
    const f = path.join(mnt, `f${i}`);
    fs.writeFileSync(f, crypto.randomBytes((i + 1) * 700 * 1024));
    sums.set(`f${i}`, sha256(f));
  }
  run('umount', [mnt]);
  const allocated = (await c.json<Info>('info', 'd2')).allocatedBytes;
  t.ok(allocated < 128 * MB, `ext4 on a thin disk allocates only what it writes (${allocated / MB} of 128 MiB)`);

  const rm = await c.vdisk('rm', 'd2');
  t.equal(rm.status, 2, 'rm of an attached disk is refused');
  t.match(rm.err, /attached on h1: detach it first/);
  const crm = await c.vdisk('container', 'rm', 'c2');
  t.equal(crm.status, 2, 'rm of a container in use is refused');
  t.match(crm.err, /in use/);

  await c.ok('detach', 'd2');
  t.notOk(fs.existsSync(d2), 'detach removed the device');
  const again = await c.attach('d2');
  run('mount', [again, mnt]);
  for (const [f, sum] of sums) t.equal(sha256(path.join(mnt, f)), sum, `${f} intact after detach and attach`);
  run('umount', [mnt]);
  run('e2fsck', ['-f', '-n', again]);
  t.pass('e2fsck finds the file system clean');
  await c.ok('detach', 'd2');
  await c.ok('rm', 'd2');
  await c.ok('container', 'rm', 'c2');
  t.pass('after detach, rm of the disk and of its container succeed');
});

t.test('a thick disk made of a removed disk\'s segments reads zeros through its device, not the old data', async (t) => {
  const c = await Cluster.start('vd-thick-reuse');
  t.teardown(() => c.stop());
  await c.container('c1', '17M'); // room for exactly one 16 MiB disk after the label: the thick one must reuse every segment
  await c.ok('create', 'old', '--size', '16M', '--container', 'c1');
  const pattern = Buffer.alloc(16 * MB, 0xab);
  writeDirect(await c.attach('old'), 0, pattern);
  await c.ok('detach', 'old');
  await c.ok('rm', 'old');
  // Freed segments wait out their quarantine first: until then there is no room for the thick disk.
  await c.until('a thick create fits once the freed segments are reusable', async () =>
    (await c.vdisk('create', 'new', '--size', '16M', '--container', 'c1', '--thick')).status === 0, 60_000);
  const info = await c.json<Info>('info', 'new');
  t.same(info.perContainer, { c1: 16 * MB }, 'every segment of the new disk is mapped, on c1');
  const dev = await c.attach('new');
  const got = readDirect(dev, 0, 16 * MB);
  t.ok(got.equals(Buffer.alloc(16 * MB)), `the new disk reads zeros (${got.indexOf(0xab) < 0 ? 'no' : 'some'} bytes of the old pattern)`);
  t.equal(...(await c.check()));
});
