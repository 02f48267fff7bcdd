// ublk user recovery: `vdisk loop --recoverable` killed with SIGKILL leaves /dev/ublkbN quiesced (I/O
// waits, nothing fails); `vdisk loop --recover ID` takes it over. fio verify runs across the kill and must
// see no error; refusals (live device, non-recoverable device, wrong size) are clear.
import t from 'tap';
import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import {
  makeFile, readDirect, serveLoop, tracked, ublkAvailable, ublkServedBy, vdisk, waitFor, writeDirect, writesCompleted,
} from './helpers.js';

const missing = ublkAvailable();
if (missing) t.fail(`needs a real ublk kernel: ${missing}`);
const MB = 1 << 20;

t.test('kill -9 under fio verify, then --recover: no I/O error, data verified', async (t) => {
  const file = makeFile('recover', 64 * MB);
  t.teardown(() => fs.rmSync(file, { force: true }));
  const first = await serveLoop(file, ['--recoverable', '--queues', '2']);
  const before = crypto.randomBytes(MB);
  writeDirect(first.device, 60 * MB, before);

  const fio = spawn('fio', ['--name=recover', `--filename=${first.device}`, '--ioengine=libaio', '--direct=1', '--iodepth=32',
    '--rw=randwrite', '--bs=4k', '--size=32M', '--verify=crc32c', '--verify_fatal=1', '--do_verify=1'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let fioOut = '';
  fio.stdout.on('data', (d) => { fioOut += d; });
  fio.stderr.on('data', (d) => { fioOut += d; });
  const fioDone = tracked(new Promise<number | null>((r) => fio.once('exit', (code) => r(code))));

  const written = writesCompleted(first.device);
  await waitFor('fio to complete 500 writes', () => writesCompleted(first.device) >= written + 500 || fioDone.done());
  t.notOk(fioDone.done(), 'fio is still writing when the server is killed');
  t.equal(await first.stop('SIGKILL'), null, 'the server died by SIGKILL');
  t.ok(fs.existsSync(first.device), `${first.device} survives its server`);
  t.notOk(fioDone.done(), 'fio waits for the next server');
  const second = await serveLoop(file, ['--recover', String(first.devId)]);
  t.equal(second.device, first.device, 'the same device is served again');
  const fioCode = await fioDone.p;
  t.equal(fioCode, 0, 'fio finished and verified with no error');
  if (fioCode !== 0) t.comment(fioOut);
  t.ok(readDirect(second.device, 60 * MB, MB).equals(before), 'data written before the crash is intact');

  const r = vdisk(['loop', file, '--recover', String(first.devId)]);
  t.equal(r.status, 2, 'recovering a live device is refused');
  t.match(r.stderr, /live .*not quiesced/);
  t.equal(await second.stop(), 0, 'the recovered device stops and is deleted');
  t.notOk(await ublkServedBy(first.devId, [first.proc.pid, second.proc.pid]), `${first.device} is gone`);
});

t.test('a device without --recoverable cannot be taken over; a wrong-size file is refused', async (t) => {
  const file = makeFile('norecover', 16 * MB);
  const other = makeFile('othersize', 8 * MB);
  t.teardown(() => { fs.rmSync(file, { force: true }); fs.rmSync(other, { force: true }); });
  const s = await serveLoop(file);
  const r = vdisk(['loop', file, '--recover', String(s.devId)]);
  t.equal(r.status, 2);
  t.match(r.stderr, /not created with user recovery/);
  t.equal(await s.stop(), 0);

  const rec = await serveLoop(file, ['--recoverable']);
  await rec.stop('SIGKILL');
  const wrong = vdisk(['loop', other, '--recover', String(rec.devId)]);
  t.equal(wrong.status, 2);
  t.match(wrong.stderr, /sectors, but the disk given has/);
  const again = await serveLoop(file, ['--recover', String(rec.devId)]);
  t.equal(await again.stop(), 0, 'a refused attempt left the device recoverable');
  const pids = [s.proc.pid, rec.proc.pid, again.proc.pid];
  t.notOk(await ublkServedBy(s.devId, pids), `${s.device} is gone`);
  t.notOk(await ublkServedBy(rec.devId, pids), `${rec.device} is gone`);
});
