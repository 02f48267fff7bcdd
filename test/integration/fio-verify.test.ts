// fio write-then-verify (crc32c) against /dev/ublkbN: 4k random on 1 and 4 queues, mixed 4k..512k on 2,
// depth 32; then the written pattern is verified again through a fresh device over the same file. (Each
// case costs ~45 s under emulation: the three cover one and several queues, small and large requests.)
import t from 'tap';
import fs from 'node:fs';
import { makeFile, run, serveLoop, ublkAvailable } from './helpers.js';

const missing = ublkAvailable();
if (missing) t.fail(`needs a real ublk kernel: ${missing}`);

function fio(device: string, name: string, extra: string[]): string {
  return run('fio', [
    `--name=${name}`, `--filename=${device}`, '--ioengine=libaio', '--direct=1', '--iodepth=32', '--numjobs=1',
    '--size=24M', '--verify=crc32c', '--verify_fatal=1', '--randseed=4242', '--output-format=terse', ...extra,
  ]);
}

const rand4k = ['--rw=randwrite', '--bs=4k'];
const mixed = ['--rw=randwrite', '--bsrange=4k-512k', '--bs_unaligned=0'];
const cases: Array<[string, string[], number]> = [['rand4k', rand4k, 1], ['mixed', mixed, 2], ['rand4k', rand4k, 4]];

for (const [name, args, queues] of cases) {
  t.test(`fio ${name} verify, ${queues} queue(s), depth 32`, async (t) => {
    const file = makeFile(`fio-${name}`, 32 << 20);
    t.teardown(() => fs.rmSync(file, { force: true }));
    let s = await serveLoop(file, ['--queues', String(queues), '--depth', '64']);
    fio(s.device, name, [...args, '--do_verify=1']);
    t.pass('fio wrote and verified every block');
    t.equal(await s.stop(), 0);
    s = await serveLoop(file, ['--queues', String(queues)]);
    fio(s.device, name, [...args, '--verify_only=1']);
    t.pass('the pattern is intact through a new device over the same file');
    t.equal(await s.stop(), 0);
  });
}
