// Live migration on the real kernel: a disk moves to another container while fio writes and verifies it,
// and a migration interrupted by kill -9 of the controller resumes when the controller restarts, with the
// data intact and `vdisk check` clean.
import t from 'tap';
import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import { Cluster } from './cluster.js';
import { readDirect, run, ublkAvailable, writeDirect } from './helpers.js';

const missing = ublkAvailable();
if (missing) t.fail(`needs a real ublk kernel: ${missing}`);
const MB = 1 << 20;
interface Info { perContainer: Record<string, number> }

t.test('migration under fio verify', async (t) => {
  const c = await Cluster.start('vd-migrate');
  t.teardown(() => c.stop());
  await c.container('c1', '256M');
  await c.container('c2', '256M');
  await c.ok('create', 'd', '--size', '64M', '--container', 'c1');
  const dev = await c.attach('d', 'h1', '--queues', '2');
  const base = crypto.randomBytes(8 * MB);
  writeDirect(dev, 32 * MB, base); // data that only the migration moves
  const fio = spawn('fio', ['--name=m', `--filename=${dev}`, '--rw=randwrite', '--bs=4k', '--size=16M', '--iodepth=8',
    '--ioengine=libaio', '--direct=1', '--verify=crc32c', '--do_verify=1', '--verify_fatal=1', '--rate_iops=800', '--randrepeat=0'],
  { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  fio.stdout.on('data', (d) => { out += d; });
  fio.stderr.on('data', (d) => { out += d; });
  let fioExited = false;
  const fioDone = new Promise<number | null>((r) => fio.once('exit', (code) => { fioExited = true; r(code); }));
  // Migrate once fio has allocated a few segments of its own (observed in the store), while it still runs.
  await c.until('fio to allocate 4 segments', async () => fioExited || (await c.json<{ allocatedBytes: number }>('info', 'd')).allocatedBytes >= 12 * MB);
  t.notOk(fioExited, 'fio is still writing when the migration starts');
  const m = await c.vdisk('migrate', 'd', '--to', 'c2', '--json');
  t.equal(m.status, 0, `migrate finished: ${m.err}`);
  const lines = m.out.trim().split('\n').map((l) => JSON.parse(l) as { progress?: { done: number; total: number }; done?: { moved: number } });
  t.ok(lines.some((l) => l.progress), 'progress was reported as JSON lines');
  t.ok((lines.at(-1)?.done?.moved ?? 0) >= 8, `the result says how many segments moved (${lines.at(-1)?.done?.moved})`);
  t.equal(await fioDone, 0, `fio's verify passed across the migration\n${out.split('\n').filter((l) => /err|verify/.test(l)).join('\n')}`);
  t.ok(readDirect(dev, 32 * MB, 8 * MB).equals(base), 'the data written before is intact');
  const info = (await c.json<Info>('info', 'd'));
  t.same(Object.keys(info.perContainer), ['c2'], `everything is on c2 (${JSON.stringify(info.perContainer)})`);
  t.equal((await c.json<Array<{ usedBytes: number }>>('container', 'ls'))[0].usedBytes, 0, 'c1 is empty');
  t.equal(...(await c.check()));
});

t.test('a migration interrupted by kill -9 of the controller resumes', async (t) => {
  const c = await Cluster.start('vd-migrate-kill');
  t.teardown(() => c.stop());
  await c.container('c1', '256M');
  await c.container('c2', '256M');
  await c.ok('create', 'd', '--size', '64M', '--container', 'c1');
  const dev = await c.attach('d');
  const data = crypto.randomBytes(12 * MB);
  writeDirect(dev, 0, data);
  const pid = await c.controllerPid();
  // A real process: what the user sees when the controller dies under a running command is its exit.
  const { proc: m, done: mExit } = c.spawnVdisk(['migrate', 'd', '--to', 'c2', '--json']);
  let progressed = 0;
  m.stdout!.on('data', (d: Buffer) => {
    for (const l of d.toString().trim().split('\n')) {
      try { progressed = Math.max(progressed, (JSON.parse(l) as { progress?: { moved: number } }).progress?.moved ?? 0); } catch { /* partial line */ }
    }
  });
  await c.until('the migration to move a few segments', () => progressed >= 3, 120_000);
  process.kill(pid, 'SIGKILL');
  t.not((await mExit).status, 0, 'the migrate command reports the lost controller');
  t.equal((await c.vdisk('controller', 'start')).status, 0, 'the controller restarts');
  await c.until('the resumed migration to finish', async () => Object.keys((await c.json<Info>('info', 'd')).perContainer).join() === 'c2', 300_000);
  t.pass('the migration resumed and finished');
  t.ok(readDirect(dev, 0, 12 * MB).equals(data), 'every byte is intact');
  t.equal(...(await c.check()));
  run('sync', []);
});
