// The native queue against a real ublk device, without the CLI: a wake that arrives before or while the
// queue fetches its tags must not be lost (it once was, and a failed start then hung in teardown).
import t from 'tap';
import fs from 'node:fs';
import { addon } from '../../src/native/addon.js';
import * as abi from '../../src/native/abi.js';
import { UblkControlDevice } from '../../src/ublk/control.js';
import { deviceParams } from '../../src/ublk/device.js';
import { MappingTable } from '../../src/table/mapping-table.js';
import { ublkAvailable } from './helpers.js';

const missing = ublkAvailable();
if (missing) t.fail(`needs a real ublk kernel: ${missing}`);

t.test('a wake sent before fetchAll() still ends the next run()', async (t) => {
  const native = addon();
  const control = UblkControlDevice.open();
  t.teardown(() => control.close());
  const info = await control.addDev({ nrHwQueues: 1, queueDepth: 4, maxIoBufBytes: 64 << 10, flags: 0n });
  const table = MappingTable.create({ segments: 1, segmentSize: 1 << 20 });
  await control.setParams(info.devId, deviceParams({
    queues: 1, depth: 4, maxIoBufBytes: 64 << 10, sizeBytes: 1 << 20, table,
    containerFds: new SharedArrayBuffer(4),
  }));
  let cdev = -1;
  for (let i = 0; i < 250 && cdev < 0; i++) {
    try { cdev = fs.openSync(`/dev/ublkc${info.devId}`, 'r+'); } catch { await new Promise((r) => setTimeout(r, 20)); }
  }
  const wake = native.eventfd();
  const status = new Int32Array(abi.STATUS_LEN);
  const q = new native.UblkQueue({
    cdevFd: cdev, qId: 0, depth: 4, maxIoBufBytes: 64 << 10, wakeFd: wake, encoded: (info.flags & (1n << 6n)) !== 0n,
    ready: new Uint32Array(4 * abi.READY_STRIDE), completed: new Uint32Array(4), plan: new Int32Array(4 * abi.MAX_OPS_PER_TAG * abi.PLAN_STRIDE), status,
  });
  native.eventfdWrite(wake);
  q.fetchAll();
  t.equal(status[abi.STATUS_IN_KERNEL], 4, 'every tag is parked in the kernel');
  const n = q.run(0, true, 5000);
  t.equal(n, 0, 'no requests on a device that was never started');
  t.equal(status[abi.STATUS_WAKEUPS], 1, 'run() returned on the early wake (counted), not at its timeout');
  q.close();
  fs.closeSync(cdev);
  fs.closeSync(wake);
  await control.delDev(info.devId);
  t.notOk(fs.existsSync(`/dev/ublkc${info.devId}`), 'device deleted');
});
