// Reconciliation across links of one host (src/controller/attachments.ts): an agent that dies while the
// controller reconciles it leaves that reconciliation to fail on a dead link. The next agent's reconciliation
// must wait for it and recover the device itself: skipping the disk (as it once did) left the device
// quiesced and its I/O held forever (the crash matrix's agent.recovered hung so under load).
import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { scriptedController, sleep } from '../support/scripted-agent.js';

const MB = 1 << 20;
const { dir, ask, controller, scriptedAgent } = await scriptedController(t, 'vdisk-relink-');
const img = path.join(dir, 'c1.img');
fs.writeFileSync(img, Buffer.alloc(4 * MB));
await ask('container.add', { name: 'c1', path: img, size: 4 * MB });
const disk = await ask<{ id: number }>('disk.create', { name: 'd1', size: 4 * MB, segmentSize: MB });

t.test('a reconciliation still under way for a dead link is waited for, then redone on the new one', async (t) => {
  const first = await scriptedAgent('hx', 7);
  await ask('disk.attach', { name: 'd1', hostId: 'hx' });
  first.silence();
  await first.conn.close();
  // The disk's lock is busy (any flow): the next agent's reconciliation of d1 waits for it.
  let release!: () => void;
  const gate = new Promise<void>((r) => { release = r; });
  const held = controller.attachments.locks.run(disk.id, () => gate);
  const second = await scriptedAgent('hx', 7);
  // A third agent replaces the second (the second died) while the second's reconciliation still waits.
  const third = await scriptedAgent('hx', 7);
  release();
  await held;
  for (let i = 0; i < 250 && !third.ops().includes('device.recover'); i++) await sleep(20);
  t.notOk(second.ops().includes('device.recover'), 'the dead link was never asked');
  t.ok(third.ops().includes('device.recover'), 'the new agent is asked to recover the device');
  t.same(await ask('attachment.ls'), [{ diskId: disk.id, disk: 'd1', hostId: 'hx', devId: 7 }], 'the attachment stands');
  await third.conn.close();
});

t.test('a recovery that fails decides whether the disk gets a new device', async (t) => {
  // The agent dies during the recovery (its link reports ECONNRESET): nothing is started on the dead link,
  // and the attachment keeps the quiesced device for the next agent.
  const dying = await scriptedAgent('hx', 7, undefined, { fail: { 'device.recover': 'ECONNRESET' } });
  for (let i = 0; i < 250 && !dying.ops().includes('device.recover'); i++) await sleep(20);
  t.ok(dying.ops().includes('device.recover'), 'the recovery is asked for');
  t.notOk(dying.ops().includes('device.start'), 'no new device on the link that died');
  t.same(await ask('attachment.ls'), [{ diskId: disk.id, disk: 'd1', hostId: 'hx', devId: 7 }], 'the attachment keeps the quiesced device');
  await dying.conn.close();
  // The kernel cannot hand the device over any more (the agent deleted it): the disk gets a new one.
  const next = await scriptedAgent('hx', 9, undefined, { fail: { 'device.recover': 'ENOTRECOVERABLE' } });
  for (let i = 0; i < 250 && !next.ops().includes('device.start'); i++) await sleep(20);
  t.same(next.ops().filter((op) => op.startsWith('device.')), ['device.recover', 'device.start'], 'a new device after the refused recovery');
  for (let i = 0; i < 250 && (await ask<Array<{ devId: number }>>('attachment.ls'))[0]?.devId !== 9; i++) await sleep(20);
  t.same(await ask('attachment.ls'), [{ diskId: disk.id, disk: 'd1', hostId: 'hx', devId: 9 }], 'the attachment names the new device');
  await next.conn.close();
});
