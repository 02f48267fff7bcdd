// The blocking flag: UblkDevice.barrier() must resolve only after every request started before it has
// completed. A write is held inside a suspended device-mapper device used as the container; the barrier
// has to stay pending until the device is resumed, while later requests complete. A barrier with nothing
// in flight resolves.
import t from 'tap';
import { spawn, spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import { MappingTable, STATE_ZERO } from '../../src/table/mapping-table.js';
import { UblkControlDevice } from '../../src/ublk/control.js';
import { UblkDevice } from '../../src/ublk/device.js';
import { openContainer } from '../../src/loop/container.js';
import { inflight, makeFile, readDirect, readDirectAsync, run, tracked, ublkAvailable, waitFor } from './helpers.js';

const missing = ublkAvailable();
if (missing) t.fail(`needs a real ublk kernel: ${missing}`);
const MB = 1 << 20;
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
    queues: 2, depth: 16, sizeBytes: 8 * MB, table, containerFds: fds.buffer as SharedArrayBuffer,
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

  await dev.barrier();
  t.pass('an idle barrier resolves (nothing to wait for)');

  t.equal(dm(['suspend', name]).status, 0, 'container suspended');
  const data = crypto.randomBytes(64 * 1024);
  const writer = spawn('dd', [`of=${dev.path}`, 'bs=64K', 'seek=3', 'count=1', 'oflag=direct', 'status=none'], { stdio: ['pipe', 'ignore', 'pipe'] });
  writer.stdin.end(data);
  const writerDone = tracked(new Promise<number | null>((r) => writer.once('exit', (code) => r(code))));
  await waitFor('the write to be in flight on the device', () => inflight(dev.path).writes >= 1 || writerDone.done());
  t.notOk(writerDone.done(), 'the write is stalled in the container (in flight on the device)');

  const order: string[] = [];
  const barrier = dev.barrier(600_000).then(() => { order.push('barrier'); });
  // Proof that the barrier waits for that write, not just for a slow worker: a request started after it (a
  // read of a segment the table marks Zero: served without the container) completes while it is pending.
  table.setRange(7, 1, { states: STATE_ZERO, container: 0, offset: 0, alt: 0 });
  t.ok((await readDirectAsync(dev.path, 7 * MB, 4096)).equals(Buffer.alloc(4096)), 'a later read completes');
  t.equal(inflight(dev.path).writes, 1, 'the write from before the barrier is still in flight');
  t.same(order, [], 'the barrier is still pending');

  order.push('resume');
  t.equal(dm(['resume', name]).status, 0, 'container resumed');
  await barrier;
  t.same(order, ['resume', 'barrier'], 'the barrier resolved only after the write could complete');
  t.equal(await writerDone.p, 0, 'the stalled write completed successfully');
  t.ok(readDirect(loop, 3 * 64 * 1024, 64 * 1024).equals(data), 'and its data is in the container');

  // Requests that completed before a barrier do not hold it: with nothing in flight the next one resolves.
  await dev.barrier();
  t.pass('with nothing in flight the next barrier resolves');
});
