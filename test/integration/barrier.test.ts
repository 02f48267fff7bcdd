// The blocking flag: UblkDevice.barrier() must resolve only after every request started before it has
// completed. A write is held inside a suspended device-mapper device used as the container; the barrier
// has to stay pending until the device is resumed. A barrier with nothing in flight resolves at once.
import t from 'tap';
import { spawn, spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import { MappingTable } from '../../src/table/mapping-table.js';
import { UblkControlDevice } from '../../src/ublk/control.js';
import { UblkDevice } from '../../src/ublk/device.js';
import { openContainer } from '../../src/loop/container.js';
import { makeFile, readDirect, run, ublkAvailable } from './helpers.js';

const missing = ublkAvailable();
if (missing) t.fail(`needs a real ublk kernel: ${missing}`);
const MB = 1 << 20;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const dm = (args: string[]) => spawnSync('dmsetup', args, { encoding: 'utf8', env: { ...process.env, DM_DISABLE_UDEV: '1' } });

t.test('barrier waits for a write stalled in the container, and only for it', async (t) => {
  const file = makeFile('barrier', 8 * MB);
  const loop = run('losetup', ['-f', '--show', file]).trim();
  const name = `vdisk-stall-${process.pid}`;
  const created = dm(['create', name, '--table', `0 ${(8 * MB) / 512} linear ${loop} 0`]);
  t.equal(created.status, 0, `dmsetup create: ${created.stderr}`);
  const container = openContainer(`/dev/mapper/${name}`, { direct: true });
  const table = MappingTable.create({ segments: 8, segmentSize: MB });
  table.setRange(0, 8, { states: 0, container: 0, offset: 0, alt: 0 });
  const fds = new Int32Array(new SharedArrayBuffer(4));
  fds[0] = container.fd;
  const control = UblkControlDevice.open();
  const dev = await UblkDevice.start(control, {
    queues: 2, depth: 16, sizeBytes: 8 * MB, table, containerFds: fds.buffer as SharedArrayBuffer, flushFds: [container.fd],
  });
  t.teardown(async () => {
    dm(['resume', name]);
    await dev.stop();
    control.close();
    fs.closeSync(container.fd);
    dm(['remove', name]);
    run('losetup', ['-d', loop]);
    fs.rmSync(file, { force: true });
  });

  let started = Date.now();
  await dev.barrier();
  t.ok(Date.now() - started < 1000, `an idle barrier resolves at once (${Date.now() - started} ms)`);

  t.equal(dm(['suspend', name]).status, 0, 'container suspended');
  const data = crypto.randomBytes(64 * 1024);
  const writer = spawn('dd', [`of=${dev.path}`, 'bs=64K', 'seek=3', 'count=1', 'oflag=direct', 'status=none'], { stdio: ['pipe', 'ignore', 'pipe'] });
  writer.stdin.end(data);
  const writerDone = new Promise<number | null>((r) => writer.once('exit', (code) => r(code)));
  let writerExited = false;
  void writerDone.then(() => { writerExited = true; });
  await sleep(1500); // the write reaches the worker and stalls in the suspended dm device
  t.notOk(writerExited, 'the write is stalled in the container');

  started = Date.now();
  let resolvedAt = 0;
  const barrier = dev.barrier().then(() => { resolvedAt = Date.now(); });
  await sleep(2000);
  t.equal(resolvedAt, 0, 'the barrier is still pending while a write from before it is in flight');

  t.equal(dm(['resume', name]).status, 0, 'container resumed');
  await barrier;
  t.ok(resolvedAt - started >= 2000, `the barrier resolved only after the resume (${resolvedAt - started} ms)`);
  t.equal(await writerDone, 0, 'the stalled write completed successfully');
  t.ok(readDirect(loop, 3 * 64 * 1024, 64 * 1024).equals(data), 'and its data is in the container');

  // Requests started after a barrier do not hold it: a new stalled write, then an idle-queue barrier on
  // a fresh epoch must wait for it, but the epoch before has already been reported drained.
  started = Date.now();
  await dev.barrier();
  t.ok(Date.now() - started < 1000, 'with nothing in flight the next barrier resolves at once');
});
