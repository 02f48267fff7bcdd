// An agent whose connection stays open but goes silent (a partition that drops packets: nothing closes the
// TCP connection) is lost from its last answered ping: a blocking change waits out its fence and then goes
// on, instead of failing after the request timeout, and the agent's link is closed so that it reconnects
// and reloads. An agent that keeps pinging is never dropped.
import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { fenceMs } from '../../src/protocol/lease.js';
import { scriptedController } from '../support/scripted-agent.js';

const MB = 1 << 20;
const LEASE = 500;

t.test('a silent agent is dropped after its lease; the snapshot waits for its fence, then completes', async (t) => {
  const { dir, scriptedAgent, ask } = await scriptedController(t, 'vdisk-silent-');
  const img = path.join(dir, 'c1.img');
  fs.writeFileSync(img, '');
  fs.truncateSync(img, 16 * MB);
  await ask('container.add', { name: 'c1', path: img, size: 16 * MB });
  const quiet = await scriptedAgent('hq', 1, undefined, { leaseMs: LEASE });
  const talking = await scriptedAgent('ht', 2, undefined, { leaseMs: LEASE });
  await ask('disk.create', { name: 'd', size: 4 * MB });
  await ask('disk.attach', { name: 'd', hostId: 'hq' });
  await ask('disk.attach', { name: 'd', hostId: 'ht' });
  let closed = false;
  void quiet.conn.closed.then(() => { closed = true; });
  // From here on nothing of hq reaches the controller; its lease counts from its last answered ping.
  quiet.silence();
  const contact = quiet.lastContact();
  await ask('disk.snapshot', { name: 'd', snapshot: 's' });
  const answeredAt = Date.now();
  t.ok(answeredAt - contact >= fenceMs(LEASE), `answered ${answeredAt - contact} ms after hq's last contact: not before its fence (${fenceMs(LEASE)} ms), by which a real agent has suspended and drained`);
  t.ok(closed, 'the controller closed the silent agent\'s link');
  t.ok(talking.got.some((g) => g.op === 'table.states' && g.args.blocking === true), 'the agent that answers got the blocking No-write');
  const ls = await ask<Array<{ hostId: string }>>('agent.ls');
  t.same(ls.map((a) => a.hostId), ['ht'], 'the pinging agent is still connected; the silent one is gone');
  const snaps = await ask<Array<{ name: string }>>('disk.ls');
  t.ok(snaps.some((d) => d.name === 's'), 'the snapshot exists');
});
