// What a peer may make the controller do, found by the protocol fuzz: a lease is bounded (a lost agent's lease
// is what blocking changes to its disks wait out) and agent.register's arguments are checked, not ignored;
// each request is for the cli or for agents, by the role of the connection's hello; events, which the
// controller never listens for, are dropped rather than held; a cli connection has at most 64 requests served.
import t from 'tap';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { Agent } from '../../src/agent/agent.js';
import { socketPath } from '../../src/controller/paths.js';
import { connect } from '../../src/protocol/client.js';
import { encodeJson, FrameDecoder } from '../../src/protocol/frame.js';
import type { ResponseMessage } from '../../src/protocol/messages.js';
import { MAX_LEASE_MS, MIN_LEASE_MS } from '../../src/protocol/lease.js';
import { runCli } from '../support/cli.js';
import { STATE_NO_WRITE, STATE_ZERO } from '../../src/table/mapping-table.js';
import { FAULT_WRITE } from '../../src/protocol/fault-ops.js';
import { scriptedController } from '../support/scripted-agent.js';

const MB = 1 << 20;
const { dir, controller, cli, ask, scriptedAgent } = await scriptedController(t, 'vdisk-peers-');
const sock = socketPath(dir);

t.test('agent.register: a lease from 0.5 to 3600 s, disks a list of objects; anything else is EINVAL', async (t) => {
  const { conn } = await connect(sock, { role: 'agent', hostId: 'hl' });
  t.teardown(() => conn.close());
  conn.onRequest(async () => ({}));
  for (const leaseMs of [0, 1, MIN_LEASE_MS - 1, MAX_LEASE_MS + 1, Number.MAX_SAFE_INTEGER, 1.5, -1, '10000', null]) {
    await t.rejects(conn.request('agent.register', { pid: process.pid, leaseMs, disks: [] }), { code: 'EINVAL', message: /leaseMs/ }, `leaseMs ${String(leaseMs)} is refused`);
  }
  for (const disks of ['x', {}, 5, null, true, [null], [1], [[]], ['x']]) {
    await t.rejects(conn.request('agent.register', { pid: process.pid, leaseMs: 5000, disks }), { code: 'EINVAL', message: /disks/ }, `disks ${JSON.stringify(disks)} is refused`);
  }
  t.same(await ask('agent.ls'), [], 'no refused registration counts');
  t.same([...await controller.store.agentLeases()], [], 'and none recorded a lease');
  for (const leaseMs of [MIN_LEASE_MS, MAX_LEASE_MS]) {
    t.same((await conn.request('agent.register', { pid: process.pid, leaseMs, disks: [] })).result, { claims: 0 }, `a lease of ${leaseMs} ms is taken`);
    t.match(await ask('agent.ls'), [{ hostId: 'hl', leaseMs }]);
  }
  t.same((await conn.request('agent.register', { pid: process.pid })).result, { claims: 0 }, 'no lease (the default) and no disks are fine');
});

t.test('the agent and vdisk agent start take the same range', async (t) => {
  for (const leaseMs of [MIN_LEASE_MS - 1, MAX_LEASE_MS + 1, 0]) {
    t.throws(() => new Agent({ controller: sock, hostId: 'h1', leaseMs }), { code: 'EINVAL' }, `an agent with a lease of ${leaseMs} ms is refused`);
  }
  for (const lease of ['0.4', '3601', 'x', '-1']) {
    const r = await runCli(['agent', 'start', '--host-id', 'h1', '--lease', lease, '--foreground'], dir);
    t.equal(r.status, 1, `--lease ${lease} is a usage error`);
    t.match(r.err, /--lease must be a number of seconds from 0.5 to 3600/);
  }
});

t.test('roles: an agent cannot manage (nor stop the controller), the cli cannot act as an agent', async (t) => {
  const img = path.join(dir, 'c1.img');
  await ask('container.add', { name: 'c1', path: img, size: 16 * MB });
  const d1 = await ask<{ id: number }>('disk.create', { name: 'd1', size: 4 * MB });
  const hz = await scriptedAgent('hz', 9);
  const unregistered = (await connect(sock, { role: 'agent', hostId: 'hu' })).conn;
  const hostless = (await connect(sock, { role: 'agent' })).conn;
  t.teardown(() => Promise.all([unregistered.close(), hostless.close()]));
  // Valid requests, each of which would change something or answer: only the role refuses them.
  const managing: Array<[string, Record<string, unknown>]> = [
    ['container.add', { name: 'c2', path: path.join(dir, 'c2.img'), size: MB }], ['container.ls', {}], ['container.fail', { name: 'c1' }],
    ['disk.create', { name: 'd2', size: MB }], ['disk.ls', {}], ['disk.info', { name: 'd1' }], ['disk.snapshot', { name: 'd1', snapshot: 's1' }],
    ['disk.states', { name: 'd1', first: 0, count: 1, bits: STATE_NO_WRITE, set: true }], ['disk.fold', { name: 'd1' }], ['check', {}],
    ['disk.attach', { name: 'd1', hostId: 'hz' }], ['disk.detach', { name: 'd1' }], ['attachment.ls', {}], ['agent.ls', {}], ['stats', {}],
    ['agent.stop', { hostId: 'hz' }], ['controller.backup', { path: path.join(dir, 'backup.db') }], ['disk.migrate', { name: 'd1', to: 'c1' }],
    ['disk.clone', { snapshot: 's1', name: 'd3' }], ['disk.rm', { name: 'd1' }], ['container.rm', { name: 'c1' }], ['controller.stop', {}],
  ];
  for (const [who, conn] of [['a registered agent', hz.conn], ['an unregistered agent', unregistered], ['an agent with no host id', hostless]] as const) {
    for (const [op, args] of managing) {
      await t.rejects(conn.request(op, args), { code: 'EPERM', message: `${op} is for cli connections only, not for this agent connection` }, `${op} from ${who} is refused`);
    }
    t.match((await conn.request('controller.status')).result, { pid: process.pid }, `${who} may ask controller.status`);
  }
  const acting: Array<[string, Record<string, unknown>]> = [
    ['agent.register', { pid: process.pid, leaseMs: 5000, disks: [] }], ['agent.ping', {}],
    ['fault', { diskId: d1.id, op: FAULT_WRITE, segment: 0, states: STATE_ZERO, offset: 0, length: 4096 }], ['disk.ioerror', { diskId: d1.id, first: 0, count: 1 }],
  ];
  for (const [op, args] of acting) {
    await t.rejects(cli.request(op, args), { code: 'EPERM', message: `${op} is for agent connections only, not for this cli connection` }, `${op} from the cli is refused`);
  }
  t.same(hz.ops(), [], 'the agent was sent nothing');
  t.match(await ask('controller.status'), { pid: process.pid, disks: 1, containers: 1 }, 'the controller runs, with its one disk and container');
  t.match(await ask('disk.info', { name: 'd1' }), { allocatedBytes: 0, entriesByState: { zero: 4 } }, 'the disk is as it was');
  t.match(await ask('container.ls'), [{ name: 'c1', failed: false }]);
  t.notOk(fs.existsSync(path.join(dir, 'c2.img')) || fs.existsSync(path.join(dir, 'backup.db')), 'no file made');
  t.same(await ask('agent.ls').then((l) => (l as Array<{ hostId: string }>).map((a) => a.hostId)), ['hz'], 'only the agent that registered counts');
  t.same((await hz.conn.request('fault', { diskId: d1.id, op: FAULT_WRITE, segment: 0, states: STATE_ZERO, offset: 0, length: 4096 })).result,
    { action: 'entry', allocated: true, entry: { states: 0, container: 1, offset: 1 << 20, alt: 0 } }, 'what an agent may send still works (after the label)');
});

t.test('events: the controller listens for none, so it drops them as they come and holds nothing', async (t) => {
  for (const [who, hello] of [['the cli', { role: 'cli' }], ['an agent', { role: 'agent', hostId: 'he' }]] as const) {
    const { conn } = await connect(sock, hello);
    t.teardown(() => conn.close());
    const payload = Buffer.alloc(1 << 20, 1);
    for (let i = 0; i < 32; i++) conn.sendEvent('migrate.progress', { i }, payload);
    for (let i = 0; i < 300; i++) conn.sendEvent('progress', { op: 'x', unit: 'y', done: i, total: 300 });
    t.match((await conn.request('controller.status')).result, { pid: process.pid }, `${who}: 32 MiB of events, then an answer`);
    const held = [...controller.connections].map((c) => c.held);
    t.ok(held.length >= 2, `the controller has ${held.length} connections`);
    t.same(held.filter((h) => h.events > 0 || h.eventBytes > 0), [], `${who}: no connection holds an event`);
  }
});

t.test('a cli connection that pipelines hundreds of requests gets EBUSY beyond 64 in flight, and is served on', async (t) => {
  const s = net.createConnection(sock);
  t.teardown(() => s.destroy());
  const decoder = new FrameDecoder();
  const got: ResponseMessage[] = [];
  let wake = (): void => undefined;
  s.on('data', (c: Buffer) => {
    for (const f of decoder.push(c)) if (f.kind === 'json' && f.msg.type === 'res') got.push(f.msg as unknown as ResponseMessage);
    wake();
  });
  const until = async (n: number): Promise<void> => { while (got.length < n) await new Promise<void>((r) => { wake = r; }); };
  // One write: the controller reads them all before any handler can finish.
  const N = 200;
  s.write(Buffer.concat([encodeJson({ type: 'hello', version: 1, role: 'cli' }),
    ...Array.from({ length: N }, (_, i) => encodeJson({ type: 'req', id: i + 1, op: 'disk.ls', args: {} }))]));
  await until(N);
  const busy = got.filter((r) => !r.ok && r.error.code === 'EBUSY').length;
  t.equal(got.filter((r) => r.ok).length + busy, N, 'every request is answered: a list or EBUSY');
  t.ok(busy >= N - 64 && busy < N, `${busy} refused with EBUSY, ${N - busy} served`);
  s.write(encodeJson({ type: 'req', id: N + 1, op: 'disk.ls', args: {} }));
  await until(N + 1);
  t.equal(got[N].ok, true, 'the connection is served once they are answered');
});
