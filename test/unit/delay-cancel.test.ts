// Delay and cancel: a write to a held segment is parked on the controller's 'delay' answer (60 s) and ends
// early, by the controller's fault.cancel, the moment the hold ends; then it faults again and is served. A real
// in-process controller and a real agent (no ublk: the device's fault callback is called directly).
import t from 'tap';
import path from 'node:path';
import type { AgentDisk } from '../../src/agent/agent-disk.js';
import { Controller } from '../../src/controller/controller.js';
import { HOLD_DELAY_MS } from '../../src/controller/faults.js';
import type { Disk } from '../../src/controller/store.js';
import { agentRequest } from '../../src/protocol/agent-ops.js';
import { controllerWithAgent } from '../support/real-agent.js';
import { FAULT_WRITE } from '../../src/protocol/fault-ops.js';
import { STATE_NO_WRITE } from '../../src/table/mapping-table.js';

const SEG = 64 * 1024;
const logs: string[] = [];
const env = await controllerWithAgent(t, 'vdisk-delay-', { log: (m) => logs.push(m) });
const { dir, cli, agent } = env;
let controller = env.controller;

async function until(what: string, cond: () => boolean): Promise<void> {
  for (let i = 0; !cond(); i++) {
    if (i > 500) throw new Error(`timed out waiting until ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
const ask = async <T>(op: string, args: Record<string, unknown> = {}): Promise<T> => (await cli.request(op, args)).result as T;
await until('the agent registers', () => controller.agents.get('h1') !== undefined);

await ask('container.add', { name: 'c1', path: path.join(dir, 'c1.img'), size: 8 << 20 });
const disk = await ask<Disk>('disk.create', { name: 'd1', size: 4 * SEG, segmentSize: SEG, thick: true });
// The agent's table, loaded as an attach would (the device is what the VM tests add).
const agentConn = () => controller.agents.get('h1')!.conn;
await agentConn().request('table.create', { diskId: disk.id, name: 'd1', size: 4 * SEG, segmentSize: SEG, readOnly: false });
await agentRequest(agentConn(), 'table.set', { diskId: disk.id, first: 0, blocking: false }, { payload: await controller.store.tables.readTable(disk) });
const d = (): AgentDisk => agent.disks.get(disk.id)!;
const hold = (set: boolean) => ask('disk.states', { name: 'd1', first: 1, count: 1, bits: STATE_NO_WRITE, set });
// The states are what a queue would report: the agent's entry as it is (a fault on an entry that changed
// since is planned again without asking).
const write = () => d().fault({ op: FAULT_WRITE, segment: 1, states: d().table.load(1), offset: 0, length: SEG });

t.test('a 60 s delay on a held segment ends when the hold ends, and the write faults again and is served', async (t) => {
  t.equal(HOLD_DELAY_MS, 60_000, 'the controller delays a held write by 60 s');
  await hold(true);
  let settled: number | undefined;
  const parked = write().then((r) => { settled = r; return r; });
  await until('the write is parked on its delay', () => d().delayed === 1);
  t.equal(settled, undefined, 'still parked');
  await hold(false);
  t.equal(await parked, 0, 'the parked write is retried');
  t.same(d().delayEnds, { cancelled: 1, expired: 0 }, 'ended by the cancel, not by its 60 s');
  // The retry: the device faults again (the agent's table says No-write until the answer installs an entry).
  t.equal(await write(), 0, 'the fault that follows is answered');
  t.equal(d().delayed, 0, 'with an entry, not another delay');
  t.equal(d().table.get(1).states & STATE_NO_WRITE, 0, 'the segment is writable on the agent');
});

t.test('a cancel of another segment leaves a parked write parked; a lost link ends every delay', async (t) => {
  await hold(true);
  const parked = write();
  await until('the write is parked', () => d().delayed === 1);
  await ask('disk.states', { name: 'd1', first: 3, count: 1, bits: STATE_NO_WRITE, set: true });
  await ask('disk.states', { name: 'd1', first: 3, count: 1, bits: STATE_NO_WRITE, set: false });
  t.equal(d().delayed, 1, 'segment 3\'s hold ending does not end segment 1\'s delay');
  t.same(d().delayEnds, { cancelled: 1, expired: 0 });
  // A lost link ends every delay (no cancel could reach the agent on it): the write asks the next controller.
  const held = d();
  await controller.stop();
  t.equal(await parked, 0, 'the parked write is retried when the link drops');
  t.same(held.delayEnds, { cancelled: 2, expired: 0 }, 'its delay ended with the link');
  controller = env.controller = await Controller.start(dir); // for the teardown
});
