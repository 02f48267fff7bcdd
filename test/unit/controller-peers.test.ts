// What a peer may make the controller do, found by the protocol fuzz: a lease is bounded (a lost agent's lease
// is what blocking changes to its disks wait out) and agent.register's arguments are checked, not ignored.
import t from 'tap';
import { Agent } from '../../src/agent/agent.js';
import { socketPath } from '../../src/controller/paths.js';
import { connect } from '../../src/protocol/client.js';
import { MAX_LEASE_MS, MIN_LEASE_MS } from '../../src/protocol/lease.js';
import { runCli } from '../support/cli.js';
import { scriptedController } from '../support/scripted-agent.js';

const { dir, controller, ask } = await scriptedController(t, 'vdisk-peers-');
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
    t.same((await conn.request('agent.register', { pid: process.pid, leaseMs, disks: [] })).result, {}, `a lease of ${leaseMs} ms is taken`);
    t.match(await ask('agent.ls'), [{ hostId: 'hl', leaseMs }]);
  }
  t.same((await conn.request('agent.register', { pid: process.pid })).result, {}, 'no lease (the default) and no disks are fine');
});

t.test('the agent and vdisk agent start take the same range', async (t) => {
  for (const leaseMs of [MIN_LEASE_MS - 1, MAX_LEASE_MS + 1, 0]) {
    t.throws(() => new Agent({ socketPath: sock, hostId: 'h1', leaseMs }), { code: 'EINVAL' }, `an agent with a lease of ${leaseMs} ms is refused`);
  }
  for (const lease of ['0.4', '3601', 'x', '-1']) {
    const r = await runCli(['agent', 'start', '--host-id', 'h1', '--lease', lease, '--foreground'], dir);
    t.equal(r.status, 1, `--lease ${lease} is a usage error`);
    t.match(r.err, /--lease must be a number of seconds from 0.5 to 3600/);
  }
});
