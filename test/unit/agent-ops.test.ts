// The typed agent operations (src/protocol/agent-ops.ts): every operation in both directions accepts good
// arguments and refuses each bad field with EINVAL naming it, payloads are required where the map says so,
// unknown operations are EUNKNOWNOP, peers' results are checked, and the dispatcher calls its handler in the
// same synchronous run as the request (the agent's ordering rule).
import t from 'tap';
import {
  AGENT_OPS, CONTROLLER_OPS, agentDispatcher, encodeAnswer, parseAgentArgs, parseAnswer, parseControllerArgs,
  type AgentHandlers, type AgentOp, type ControllerOp,
} from '../../src/protocol/agent-ops.js';
import { DEFAULT_LEASE_MS, MAX_LEASE_MS, MIN_LEASE_MS } from '../../src/protocol/lease.js';

type Kind = 'int' | 'str' | 'bool' | 'optInt' | 'containers' | 'disks' | 'lease' | 'claims' | 'diskClaims';
interface Case { args: Record<string, Kind>; good: Record<string, unknown>; parsed?: Record<string, unknown>; payload?: boolean }

const BAD: Record<Kind, unknown[]> = {
  int: [undefined, '1', -1, 1.5, null, true, 2 ** 53, {}],
  optInt: ['1', -1, 1.5, null, true, 2 ** 53],
  str: [undefined, '', 5, null, ['x'], 'x'.repeat(4097)],
  bool: ['true', 1, null, {}],
  containers: [undefined, 'x', [1], [null], [{ id: '1', path: '/c' }], [{ id: 1 }], [{ id: -1, path: '/c' }], [{ id: 1, path: '' }],
    [{ id: 1, path: '/c', uuid: 'u' }], [{ id: 1, path: '/c', uuid: 7, size: 1 }]], // a label to check needs its size
  disks: ['x', [1], [{ diskId: 'a', devId: null }], [{ diskId: 1, devId: -1 }], [{ diskId: 1, devId: '0' }], [{ devId: null }]],
  lease: ['1', -1, 1.5, null, MIN_LEASE_MS - 1, MAX_LEASE_MS + 1, 0],
  claims: ['x', [1], [null], [{ segment: 'a', container: 1, offset: 0 }], [{ segment: 1, container: -1, offset: 0 }], [{ segment: 1, container: 1 }]],
  diskClaims: ['x', [1], [{ segment: 1, container: 1, offset: 0 }], [{ diskId: -1, segment: 1, container: 1, offset: 0 }], [{ diskId: 1, segment: 1.5, container: 1, offset: 0 }]],
};

const AGENT: Record<AgentOp, Case> = {
  'containers.set': {
    args: { containers: 'containers' },
    good: { containers: [{ id: 1, path: '/c1' }, { id: 2, path: '/c2', failed: false }, { id: 3, path: '/c3', uuid: 'u', size: 4096 }] },
    parsed: { containers: [{ id: 1, path: '/c1' }, { id: 2, path: '/c2' }, { id: 3, path: '/c3', uuid: 'u', size: 4096 }] },
  },
  'table.create': {
    args: { diskId: 'int', name: 'str', size: 'int', segmentSize: 'int', readOnly: 'bool' },
    good: { diskId: 1, name: 'd1', size: 1 << 20, segmentSize: 1 << 16, readOnly: true },
  },
  'table.delete': { args: { diskId: 'int' }, good: { diskId: 1 } },
  'table.get': { args: { diskId: 'int', first: 'int', count: 'int' }, good: { diskId: 1, first: 0, count: 3 } },
  'table.set': { args: { diskId: 'int', first: 'int', blocking: 'bool' }, good: { diskId: 1, first: 2, blocking: true }, payload: true },
  'table.alt': { args: { diskId: 'int', slot: 'int', container: 'int', offset: 'int' }, good: { diskId: 1, slot: 0, container: 2, offset: 4096 }, payload: true },
  'table.states': {
    args: { diskId: 'int', first: 'int', count: 'int', bits: 'int', set: 'bool', blocking: 'bool' },
    good: { diskId: 1, first: 0, count: 4, bits: 2, set: true, blocking: false },
  },
  'fault.cancel': { args: { diskId: 'int', first: 'int', count: 'int' }, good: { diskId: 1, first: 2, count: 1 } },
  'device.start': { args: { diskId: 'int', queues: 'int', depth: 'int' }, good: { diskId: 1, queues: 1, depth: 128 } },
  'device.recover': { args: { diskId: 'int', devId: 'int' }, good: { diskId: 1, devId: 0 } },
  'device.stop': { args: { diskId: 'int' }, good: { diskId: 1 } },
  'agent.status': { args: {}, good: { ignored: 'x' }, parsed: {} },
  'agent.exit': { args: {}, good: {}, parsed: {} },
  'grants.revoke': { args: { diskId: 'int' }, good: { diskId: 1 } },
};

const CONTROLLER: Record<ControllerOp, Case> = {
  'agent.register': {
    args: { pid: 'optInt', leaseMs: 'lease', disks: 'disks', claims: 'diskClaims' },
    good: { pid: 42, leaseMs: 5000, disks: [{ diskId: 1, devId: null }, { diskId: 2, devId: 3 }], claims: [{ diskId: 2, segment: 5, container: 1, offset: 2 ** 40 }] },
  },
  'agent.ping': { args: {}, good: {}, parsed: {} },
  'fault': {
    args: { diskId: 'int', op: 'int', segment: 'int', states: 'optInt', offset: 'optInt', length: 'optInt' },
    good: { diskId: 1, op: 2, segment: 7, states: 4, offset: 0, length: 65536 },
  },
  'disk.ioerror': { args: { diskId: 'int', first: 'int', count: 'int' }, good: { diskId: 1, first: 3, count: 2 } },
  'fault.ahead': { args: { diskId: 'int', segment: 'int', from: 'int' }, good: { diskId: 1, segment: 40, from: 32 } },
  'disk.sync': { args: { diskId: 'int', claims: 'claims' }, good: { diskId: 1, claims: [{ segment: 0, container: 3, offset: 1 << 20 }] } },
  'disk.grant': { args: { diskId: 'int', want: 'int', claims: 'claims' }, good: { diskId: 1, want: 16, claims: [] } },
};

const PAYLOAD = Buffer.alloc(16);

function check(side: string, parse: (op: string, a: Record<string, unknown>, p?: Buffer) => unknown, cases: Record<string, Case>): void {
  for (const [op, c] of Object.entries(cases)) {
    t.test(`${side} ${op}`, async (t) => {
      const payload = c.payload ? PAYLOAD : undefined;
      t.same(parse(op, c.good, payload), c.parsed ?? c.good, 'good arguments are accepted as they are');
      for (const [field, kind] of Object.entries(c.args)) {
        for (const v of BAD[kind]) {
          const args = { ...c.good, [field]: v };
          if (v === undefined) delete args[field];
          // A bad element of a list is named by its own field (argument id, argument devId).
          const named = kind === 'containers' ? '(containers|id|path)' : kind === 'disks' ? '(disks|diskId|devId)'
            : kind === 'claims' || kind === 'diskClaims' ? '(claims|diskId|segment|container|offset)' : field;
          t.throws(() => parse(op, args, payload), { code: 'EINVAL', message: new RegExp(`^argument (${named}|uuid|size) must be`) },
            `${field} = ${v === undefined ? 'missing' : JSON.stringify(v)?.slice(0, 40)} is refused`);
        }
      }
      if (c.payload) {
        t.throws(() => parse(op, c.good), { code: 'EINVAL', message: `${op} needs ${op === 'table.set' ? 'the entries' : 'the bitmap'} as a binary payload` }, 'the payload is required');
      }
    });
  }
}

check('agent', (op, a, p) => parseAgentArgs(op as AgentOp, a, p), AGENT);
check('controller', (op, a, p) => parseControllerArgs(op as ControllerOp, a, p), CONTROLLER);

t.test('every operation of the maps is tested, and nothing else', async (t) => {
  t.same(Object.keys(AGENT_OPS).sort(), Object.keys(AGENT).sort());
  t.same(Object.keys(CONTROLLER_OPS).sort(), Object.keys(CONTROLLER).sort());
});

t.test('optional arguments take their defaults', async (t) => {
  t.same(parseAgentArgs('table.set', { diskId: 1, first: 0 }, PAYLOAD), { diskId: 1, first: 0, blocking: false });
  t.same(parseAgentArgs('table.create', { diskId: 1, name: 'x', size: 1, segmentSize: 1 }).readOnly, false);
  t.same(parseControllerArgs('agent.register', {}), { pid: 0, leaseMs: DEFAULT_LEASE_MS, disks: [], claims: [] });
  t.same(parseControllerArgs('disk.sync', { diskId: 2 }), { diskId: 2, claims: [] }, 'an agent from before grants sends no claims');
  t.throws(() => parseControllerArgs('disk.grant', { diskId: 1, want: 1025 }), { code: 'EINVAL', message: 'argument want must be at most 1024, not 1025' });
  t.same(parseControllerArgs('fault', { diskId: 1, op: 1, segment: 0 }), { diskId: 1, op: 1, segment: 0, states: 0, offset: 0 }, 'length: the disk\'s segment size, which the controller knows');
  t.throws(() => parseControllerArgs('agent.register', { leaseMs: 10 }), { code: 'EINVAL', message: /argument leaseMs must be .*, not 10/ });
});

t.test('unknown operations are EUNKNOWNOP, across directions and Object.prototype', async (t) => {
  for (const op of ['no.such.op', 'constructor', 'toString', '__proto__', 'fault', 'agent.register']) {
    t.throws(() => parseAgentArgs(op as AgentOp, {}), { code: 'EUNKNOWNOP', message: `unknown operation ${op}` }, `agent: ${op}`);
  }
  for (const op of ['table.set', 'agent.status', 'hasOwnProperty']) {
    t.throws(() => parseControllerArgs(op as ControllerOp, {}), { code: 'EUNKNOWNOP' }, `controller: ${op}`);
  }
});

t.test('peers\' results are checked', async (t) => {
  t.same(AGENT_OPS['device.start'].result({ devId: 3, path: '/dev/ublkb3', queues: 2, extra: 1 }, undefined), { devId: 3, path: '/dev/ublkb3', queues: 2 });
  for (const bad of [undefined, null, 'x', {}, { devId: '3', path: '/dev/ublkb3', queues: 2 }, { devId: 3, path: '', queues: 2 }]) {
    t.throws(() => AGENT_OPS['device.recover'].result(bad, undefined), { code: 'EPROTO', message: /bad device.recover result from the peer/ }, JSON.stringify(bad) ?? 'undefined');
  }
  t.same(AGENT_OPS['table.states'].result('anything', undefined), {}, 'a result that carries nothing is ignored');
  t.same(AGENT_OPS['agent.status'].result({ suspended: true, disks: [null, { name: 'd', device: 5, io: { reads: 1 }, delays: { parked: -1, cancelled: 0, expired: 0 } }, { device: '/x' },
    { name: 'e', device: '/dev/ublkb2', delays: { parked: 1, cancelled: 2, expired: 3, extra: 4 }, grants: { held: 3, target: 64, claims: 9, unconfirmed: 1, requests: 2, empty: 0, x: 1 } },
    { name: 'f', grants: { held: -1, target: 64, claims: 9, unconfirmed: 1, requests: 2, empty: 0 } }] }, undefined),
  { suspended: true, disks: [{ name: 'd', device: null, io: null, delays: null, grants: null },
    { name: 'e', device: '/dev/ublkb2', io: null, delays: { parked: 1, cancelled: 2, expired: 3 }, grants: { held: 3, target: 64, claims: 9, unconfirmed: 1, requests: 2, empty: 0 } },
    { name: 'f', device: null, io: null, delays: null, grants: null }] },
  'agent.status is read field by field');
  t.same(AGENT_OPS['agent.status'].result(undefined, undefined), { suspended: false, disks: [] });
  t.throws(() => CONTROLLER_OPS['disk.ioerror'].result({ entries: -1 }, undefined), { code: 'EPROTO' });
  // The 10,000-frame fuzz (seed 1208851254): an empty report at the disk's end (first = segments, count 0) was answered.
  t.throws(() => CONTROLLER_OPS['disk.ioerror'].args({ diskId: 1, first: 16, count: 0 }), { code: 'EINVAL', message: /count must be at least 1/ },
    'an I/O error report over no entries is refused');
});

t.test('fault answers: encoded for the wire and read back; anything unusable is EIO', async (t) => {
  const entry = { states: 0, container: 2, offset: 65536, alt: 1 };
  const bitmap = Buffer.from([1, 2, 3, 255]);
  const answer = { action: 'entry' as const, entry, alternate: { slot: 1, container: 3, offset: 0, bitmap } };
  const wire = encodeAnswer(answer);
  t.same(wire, { ...answer, alternate: { ...answer.alternate, bitmap: bitmap.toString('base64') } });
  t.same(parseAnswer(JSON.parse(JSON.stringify(wire))), answer, 'round trip through JSON');
  t.same(parseAnswer({ action: 'error', errno: 28, setError: true }), { action: 'error', errno: 28, setError: true });
  t.same(parseAnswer({ action: 'delay', ms: 1e9 }), { action: 'delay', ms: 60_000 }, 'delays are capped');
  for (const bad of [null, {}, { action: 'entry' }, { action: 'entry', entry: { states: 'x', container: 1, offset: 0 } }, { action: 'error', errno: 0 }, { action: 'delay', ms: -1 }]) {
    t.same(parseAnswer(bad), { action: 'error', errno: 5 }, JSON.stringify(bad));
  }
});

t.test('the dispatcher checks arguments and calls the handler in the same synchronous run', async (t) => {
  const calls: string[] = [];
  const handlers = Object.fromEntries(Object.keys(AGENT_OPS).map((op) => [op, (a: unknown, p: Buffer | undefined) => {
    calls.push(`${op} ${JSON.stringify(a)}${p ? ` +${p.length}` : ''}`);
    return {};
  }])) as unknown as AgentHandlers;
  handlers['table.get'] = ({ first, count }) => ({ result: { first, count }, payload: Buffer.alloc(count * 16) });
  const serve = agentDispatcher(handlers);
  const pending = serve('table.states', { diskId: 1, first: 0, count: 1, bits: 2, set: true, extra: 'dropped' }, undefined);
  t.same(calls, ['table.states {"diskId":1,"first":0,"count":1,"bits":2,"set":true,"blocking":false}'], 'called before anything is awaited, with the parsed arguments');
  t.same(await pending, {});
  await serve('table.set', { diskId: 1, first: 0 }, PAYLOAD);
  t.equal(calls[1], 'table.set {"diskId":1,"first":0,"blocking":false} +16', 'the payload is passed on');
  t.same(await serve('table.get', { diskId: 1, first: 2, count: 2 }, undefined), { result: { first: 2, count: 2 }, payload: Buffer.alloc(32) });
  await t.rejects(serve('table.set', { diskId: 1, first: 0 }, undefined), { code: 'EINVAL' }, 'a refusal is a rejection, not a throw');
  await t.rejects(serve('table.get', { diskId: 1, first: -1, count: 1 }, undefined), { code: 'EINVAL', message: 'argument first must be a non-negative whole number' });
  await t.rejects(serve('toString', {}, undefined), { code: 'EUNKNOWNOP' });
  t.equal(calls.length, 2, 'no handler ran for a refused request');
  handlers['device.stop'] = () => { throw new RangeError('boom'); };
  await t.rejects(agentDispatcher(handlers)('device.stop', { diskId: 1 }, undefined), RangeError, 'a handler\'s throw is a rejection');
});
