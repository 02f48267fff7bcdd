// ext4 on /dev/ublkbN served by `vdisk loop`, with 1, 2 and 4 queues: mkfs, mount, write files, sync,
// umount, fsck, remount and compare checksums; then serve the same file again and find the data intact.
import t from 'tap';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { makeFile, mkdtemp, run, serveLoop, ublkAvailable } from './helpers.js';

const missing = ublkAvailable();
if (missing) t.fail(`needs a real ublk kernel: ${missing}`);

function writeFiles(dir: string): Map<string, string> {
  const sums = new Map<string, string>();
  const sizes = [4096, 1000, 65536, 1 << 20, 3 * (1 << 20) + 123, 8 << 20];
  sizes.forEach((size, i) => {
    const data = crypto.randomBytes(size);
    const name = `f${i}.bin`;
    fs.mkdirSync(path.join(dir, `d${i % 2}`), { recursive: true });
    fs.writeFileSync(path.join(dir, `d${i % 2}`, name), data);
    sums.set(`d${i % 2}/${name}`, crypto.createHash('sha256').update(data).digest('hex'));
  });
  return sums;
}

/** Names of the files whose contents differ from what was written. */
function changedFiles(dir: string, sums: Map<string, string>): string[] {
  return [...sums].filter(([name, sum]) =>
    crypto.createHash('sha256').update(fs.readFileSync(path.join(dir, name))).digest('hex') !== sum).map(([name]) => name);
}

for (const queues of [1, 2, 4]) {
  t.test(`ext4 round trip with ${queues} queue(s)`, async (t) => {
    const file = makeFile(`fs${queues}`, 256 << 20);
    const mnt = mkdtemp('mnt-');
    t.teardown(() => { fs.rmSync(file, { force: true }); fs.rmSync(mnt, { recursive: true, force: true }); });
    let s = await serveLoop(file, ['--queues', String(queues), '--depth', '64']);
    run('mkfs.ext4', ['-q', '-F', '-E', 'lazy_itable_init=0,lazy_journal_init=0', s.device]);
    run('mount', [s.device, mnt]);
    const sums = writeFiles(mnt);
    run('sync', []);
    run('umount', [mnt]);
    run('fsck.ext4', ['-f', '-n', s.device]);
    run('mount', [s.device, mnt]);
    t.same(changedFiles(mnt, sums), [], `all ${sums.size} files read back intact`);
    run('umount', [mnt]);
    t.equal(await s.stop(), 0, 'vdisk loop exits 0 on SIGTERM');

    // The data lives in the file, not in the device: a new device over it shows the same files.
    s = await serveLoop(file, ['--queues', String(queues)]);
    run('fsck.ext4', ['-f', '-n', s.device]);
    run('mount', ['-o', 'ro', s.device, mnt]);
    t.same(changedFiles(mnt, sums), [], `all ${sums.size} files read back intact`);
    run('umount', [mnt]);
    t.equal(await s.stop('SIGINT'), 0, 'vdisk loop exits 0 on SIGINT');
    t.notOk(fs.existsSync(s.device), `${s.device} is gone`);
  });
}
