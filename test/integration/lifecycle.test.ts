// Device lifecycle and bad input: stopping leaves no /dev/ublk* and no process behind; mistakes give one
// clear line on stderr and a non-zero exit (1 for usage, 2 for failures); `vdisk features` reads the kernel.
import t from 'tap';
import { UblkControlDevice } from '../../src/ublk/control.js';
import { spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  CLI, WORK, makeFile, mkdtemp, readDirect, serveLoop, ublkAvailable, vdisk, writeDirect,
} from './helpers.js';

const missing = ublkAvailable();
if (missing) t.fail(`needs a real ublk kernel: ${missing}`);

/** The pid serving ublk device devId now (GET_DEV_INFO), or undefined when there is no such device. */
async function serverOf(devId: number): Promise<number | undefined> {
  const control = UblkControlDevice.open();
  try {
    return (await control.getDevInfo(devId)).ublksrvPid;
  } catch {
    return undefined;
  } finally {
    control.close();
  }
}

t.test('SIGTERM and SIGINT stop and delete the device', async (t) => {
  const file = makeFile('life', 16 << 20);
  t.teardown(() => fs.rmSync(file, { force: true }));
  for (const sig of ['SIGTERM', 'SIGINT'] as const) {
    const s = await serveLoop(file, ['--queues', '2']);
    const pid = s.proc.pid!;
    t.ok(fs.statSync(s.device).isBlockDevice(), `${s.device} is a block device`);
    t.equal(await s.stop(sig), 0, `exit 0 on ${sig}`);
    // Other files run meanwhile, and the freed number may already serve one of their new devices: the
    // kernel's own record says whose a device is (START_DEV records the serving pid).
    const owner = await serverOf(s.devId);
    t.not(owner, pid, `the kernel no longer holds device ${s.devId} of pid ${pid}`);
    if (owner === undefined) {
      const left = [s.device, `/dev/ublkc${s.devId}`, `/sys/class/ublk-char/ublkc${s.devId}`].filter((p) => fs.existsSync(p));
      // A node seen now may be another file's device added since the look above (ADD_DEV makes /dev/ublkcN
      // before any server is recorded): the kernel then knows it, under another pid (or none yet). Ours,
      // left behind, would still carry our pid.
      const now = left.length ? await serverOf(s.devId) : undefined;
      if (now !== undefined && now !== pid) t.comment(`device ${s.devId} was taken since by another file (server ${now})`);
      else t.same(left, [], `${s.device}, /dev/ublkc${s.devId} and its sysfs entry are gone`);
    } else {
      t.comment(`device ${s.devId} now serves pid ${owner}, another file's`);
    }
  }
});

t.test('asking for more queues than CPUs serves with the queues the kernel grants', async (t) => {
  const file = makeFile('manyq', 8 << 20);
  t.teardown(() => fs.rmSync(file, { force: true }));
  const s = await serveLoop(file, ['--queues', '64']);
  t.equal(s.queues, Math.min(64, os.cpus().length), `granted ${s.queues} queue(s)`);
  const data = crypto.randomBytes(1 << 20);
  writeDirect(s.device, 0, data);
  t.ok(readDirect(s.device, 0, 1 << 20).equals(data), 'I/O works on every granted queue');
  t.equal(await s.stop(), 0);
});

t.test('two disks at once get distinct devices', async (t) => {
  const a = makeFile('two-a', 8 << 20);
  const b = makeFile('two-b', 8 << 20);
  t.teardown(() => { fs.rmSync(a, { force: true }); fs.rmSync(b, { force: true }); });
  const sa = await serveLoop(a);
  const sb = await serveLoop(b);
  t.not(sa.device, sb.device);
  t.equal(await sa.stop(), 0);
  t.equal(await sb.stop(), 0);
  t.same([sa.device, sb.device].filter((d) => fs.existsSync(d)), [], 'both are gone');
});

/** Exit status and stderr lines of a failed command, for one-line-error checks. */
function failure(r: { status: number | null; stderr: string }): { status: number | null; lines: string[] } {
  return { status: r.status, lines: r.stderr.trim().split('\n') };
}

t.test('bad input gives a clear one-line error and a non-zero exit', async (t) => {
  const f1 = failure(vdisk(['loop', path.join(WORK, 'no-such-file.img')]));
  t.equal(f1.status, 2, `exit 2: ${f1.lines.join(' | ')}`);
  t.equal(f1.lines.length, 1, 'one line');
  t.match(f1.lines[0], /^vdisk: cannot use .*no such file/i);
  const odd = makeFile('odd', 1000);
  const dir = mkdtemp('dir-');
  t.teardown(() => { fs.rmSync(odd, { force: true }); fs.rmSync(dir, { recursive: true, force: true }); });
  const f2 = failure(vdisk(['loop', odd]));
  t.equal(f2.status, 2, `exit 2: ${f2.lines.join(' | ')}`);
  t.equal(f2.lines.length, 1, 'one line');
  t.match(f2.lines[0], /not a positive multiple of 512/);
  const f3 = failure(vdisk(['loop', dir]));
  t.equal(f3.status, 2, `exit 2: ${f3.lines.join(' | ')}`);
  t.equal(f3.lines.length, 1, 'one line');
  t.match(f3.lines[0], /not a regular file or block device/);
  // A path we cannot open: root's private file, opened as nobody.
  const secret = makeFile('secret', 1 << 20);
  fs.chmodSync(secret, 0o600);
  fs.chmodSync(path.dirname(secret), 0o755);
  t.teardown(() => fs.rmSync(secret, { force: true }));
  // env -i: tap injects NODE_OPTIONS hooks into every child, and those would try to write .tap/ as nobody.
  const r = spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', 'env', '-i', `PATH=${process.env.PATH}`,
    process.execPath, CLI, 'loop', secret], { encoding: 'utf8' });
  const f4 = failure(r);
  t.equal(f4.status, 2, `exit 2: ${f4.lines.join(' | ')}`);
  t.equal(f4.lines.length, 1, 'one line');
  t.match(f4.lines[0], /cannot open .*permission denied/i);
  t.equal(vdisk(['loop', odd, '--queues', '0']).status, 1, 'usage error: --queues 0');
  t.equal(vdisk(['loop', odd, '--segment-size', '3M']).status, 1, 'usage error: --segment-size 3M');
  t.equal(vdisk(['loop', odd, '--depth', 'lots']).status, 1, 'usage error: --depth lots');
});

t.test('no ublk module: a clear message naming the module', async (t) => {
  const file = makeFile('nomod', 1 << 20);
  t.teardown(() => fs.rmSync(file, { force: true }));
  // A private mount namespace whose /dev lacks ublk-control: what a host without ublk_drv looks like.
  const r = spawnSync('unshare', ['-m', 'sh', '-c', `mount -t tmpfs none /dev && exec "${process.execPath}" "${CLI}" loop "${file}"`],
    { encoding: 'utf8' });
  const f5 = failure(r);
  t.equal(f5.status, 2, `exit 2: ${f5.lines.join(' | ')}`);
  t.equal(f5.lines.length, 1, 'one line');
  t.match(f5.lines[0], /ublk is not available.*modprobe ublk_drv/);
});

t.test('vdisk features lists what the kernel supports', async (t) => {
  const r = vdisk(['features', '--json']);
  t.equal(r.status, 0, r.stderr);
  const f = JSON.parse(r.stdout) as { getFeatures: boolean; features: string[] };
  t.ok(f.getFeatures, 'GET_FEATURES answered (6.5+)');
  t.ok(f.features.includes('UBLK_F_USER_RECOVERY'), 'user recovery is supported');
  t.ok(f.features.includes('UBLK_F_CMD_IOCTL_ENCODE'), 'encoded opcodes are supported');
});
