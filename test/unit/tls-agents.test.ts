// Agents of other hosts over the controller's TLS listener (issue 13 items 1 and 3), on loopback: a full
// agent session with a host credential (hello, register, ping, attach with a bulk table load of more than one
// message, a fault answered, a push), and every way in that must be refused or closed: no credential, a
// certificate of another CA, a credential speaking for another host, the CLI role, a revoked or replaced
// credential (its live connection closed), plaintext on the TLS port and 1,000 garbage frames from an
// authenticated host. Throughout, the registered agent and the CLI are served.
import t from 'tap';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import type { Disk } from '../../src/controller/store.js';
import { issueHost } from '../../src/controller/pki.js';
import { FAULT_READ, FAULT_WRITE } from '../../src/protocol/fault-ops.js';
import { connect, type TlsEndpoint } from '../../src/protocol/client.js';
import type { Connection } from '../../src/protocol/connection.js';
import { parseCredential, SERVER_NAME, type Credential } from '../../src/protocol/credential.js';
import { encodeJson, FrameDecoder } from '../../src/protocol/frame.js';
import { PROTOCOL_VERSION, type Message } from '../../src/protocol/messages.js';
import { ENTRY_BYTES } from '../../src/table/entry-codec.js';
import { STATE_ZERO } from '../../src/table/mapping-table.js';
import { entriesOf, scriptedController, type Peer } from '../support/scripted-agent.js';

const SEG = 64 * 1024;
/** One more than a table.set carries (agent-client.ts LOAD_ENTRIES): the load takes two messages. */
const BIG_SEGMENTS = (1 << 20) + 5;
const { dir, controller, cli, ask, scriptedAgent } = await scriptedController(t, 'vdisk-tls-', { listen: { host: '127.0.0.1', port: 0 } });
const addr = controller.tlsAddress!;
const issue = async (hostId: string): Promise<Credential> => parseCredential((await ask<{ credential: string }>('host.add', { hostId })).credential);
const at = (credential: Credential): TlsEndpoint => ({ host: '127.0.0.1', port: addr.port, credential });
const h1 = await issue('h1');
const h2 = await issue('h2');
await ask('container.add', { name: 'c1', path: path.join(dir, 'c1.img'), size: 64 << 20 });
const big = await ask<Disk>('disk.create', { name: 'big', size: BIG_SEGMENTS * SEG, segmentSize: SEG });
let agent1: Peer;

/** The registered agent and the CLI still get answers: the controller serves the others throughout. */
async function servingOthers(t: { same: (a: unknown, b: unknown, m: string) => void; match: (a: unknown, b: unknown, m: string) => void }): Promise<void> {
  t.same((await agent1.conn.request('agent.ping')).result, {}, 'the registered TLS agent is answered');
  t.match(await ask('controller.status'), { pid: process.pid, listen: { port: addr.port } }, 'and the CLI');
}

/** A TLS client written by hand: sends what it is given, decodes what comes back, records the end. */
class RawTls {
  readonly socket: tls.TLSSocket;
  readonly got: Message[] = [];
  readonly ended: Promise<void>;
  readonly secure: Promise<boolean>;
  error: Error | undefined;
  private readonly decoder = new FrameDecoder();
  undecodable = false;
  constructor(o: { key?: string; cert?: string; ca: string }) {
    this.socket = tls.connect({ host: '127.0.0.1', port: addr.port, servername: SERVER_NAME, minVersion: 'TLSv1.3', ...o, ca: [o.ca] });
    this.secure = new Promise((resolve) => {
      this.socket.once('secureConnect', () => resolve(true));
      this.socket.once('close', () => resolve(false));
    });
    this.ended = new Promise((resolve) => this.socket.once('close', () => resolve()));
    this.socket.on('error', (err) => { this.error ??= err; });
    this.socket.on('data', (chunk: Buffer) => {
      try {
        for (const f of this.decoder.push(chunk)) if (f.kind === 'json') this.got.push(f.msg as unknown as Message);
      } catch {
        this.undecodable = true;
      }
    });
  }
  write(b: Buffer): void {
    if (!this.socket.destroyed) this.socket.write(b);
  }
  types(): string[] {
    return this.got.map((m) => m.type);
  }
}
const hello = (hostId?: string) => encodeJson({ type: 'hello', version: PROTOCOL_VERSION, role: 'agent', ...(hostId ? { hostId } : {}) });

t.test('a full agent session over TLS: register, ping, attach with a two-message bulk load, a fault, a push', async (t) => {
  agent1 = await scriptedAgent('h1', 4, at(h1));
  t.match(await ask('agent.ls'), [{ hostId: 'h1', pid: process.pid, leaseMs: 5000 }], 'h1 registered over TLS');
  t.match(await ask('host.ls'), [{ hostId: 'h1', connected: true }, { hostId: 'h2', connected: false }]);
  t.same(await ask('disk.attach', { name: 'big', hostId: 'h1' }), { device: '/dev/ublkb4', devId: 4, hostId: 'h1', queues: 1 });
  t.same(agent1.ops(), ['table.create', 'table.set', 'table.set', 'device.start'], 'the table travels in two bulk messages');
  const loads = agent1.got.filter((g) => g.op === 'table.set');
  t.same(loads.map((g) => g.args.first), [0, 1 << 20]);
  t.same(loads.map((g) => g.payload?.length), [(1 << 20) * ENTRY_BYTES, 5 * ENTRY_BYTES], '16 MiB, then the rest');
  t.ok(entriesOf(loads[1].payload).every((e) => e.states === STATE_ZERO), 'all Zero');
  const write = (await agent1.conn.request('fault', { diskId: big.id, op: FAULT_WRITE, segment: BIG_SEGMENTS - 1, states: STATE_ZERO })).result;
  t.match(write, { action: 'entry', allocated: true, entry: { states: 0 } }, 'a write fault on the last segment allocates');
  t.match(await ask('disk.info', { name: 'big' }), { allocatedBytes: SEG });

  // A second TLS host holding the disk gets the next allocation before the writer's answer.
  const agent2 = await scriptedAgent('h2', 5, at(h2));
  await ask('disk.attach', { name: 'big', hostId: 'h2' });
  const before = agent2.got.length;
  const second = (await agent1.conn.request('fault', { diskId: big.id, op: FAULT_WRITE, segment: 7, states: STATE_ZERO })).result as { entry: unknown };
  const push = agent2.got.slice(before).find((g) => g.op === 'table.set');
  t.match(push?.args, { diskId: big.id, first: 7 }, 'h2 was pushed the new entry');
  t.same(entriesOf(push?.payload), [second.entry]);
  t.match((await agent2.conn.request('fault', { diskId: big.id, op: FAULT_READ, segment: 7, states: STATE_ZERO })).result, { action: 'entry', entry: second.entry });
  t.same(await ask('disk.detach', { name: 'big', hostId: 'h2' }), { detached: ['h2'] });
  await agent2.conn.close();
  await servingOthers(t);
});

t.test('no credential: the TLS handshake is refused and no connection is handed over', async (t) => {
  const before = controller.connections.size;
  const raw = new RawTls({ ca: h1.ca });
  await raw.secure;
  raw.write(hello('h1'));
  await raw.ended;
  t.same(raw.types(), [], 'no welcome, no frame at all');
  t.match(raw.error?.message ?? '', /certificate required|alert/i, `the controller's alert: ${raw.error?.message}`);
  t.equal(controller.connections.size, before, 'nothing reached the protocol');
  await t.rejects(connect(at({ ...h1, key: h2.key }), { role: 'agent' }), { message: /key values mismatch/ }, 'a key that is not the certificate\'s does not connect either');
  await servingOthers(t);
});

t.test('a certificate for h1 from another CA is refused at the handshake', async (t) => {
  const other = fs.mkdtempSync(path.join(os.tmpdir(), 'vdisk-tls-other-'));
  t.teardown(() => fs.rmSync(other, { recursive: true, force: true }));
  const foreign = parseCredential((await issueHost(other, 'h1')).credential);
  // Pinning the right CA, presenting the foreign certificate.
  const before = controller.connections.size;
  await t.rejects(connect(at({ ...foreign, ca: h1.ca }), { role: 'agent' }), { code: 'ECONNRESET', message: /closed the TLS connection before answering: it did not accept this host's certificate/ },
    'the controller refuses it');
  t.equal(controller.connections.size, before, 'nothing reached the protocol');
  // Pinning the foreign CA: the agent refuses the controller.
  await t.rejects(connect(at(foreign), { role: 'agent' }), { code: 'EACCES', message: /TLS handshake .* failed: .*(self-signed|unable to verify|certificate)/ },
    'and an agent pinning another CA refuses this controller');
  await servingOthers(t);
});

t.test('h2\'s credential speaking for h3, or as the CLI, is refused; the host id is the certificate\'s', async (t) => {
  await t.rejects(connect(at(h2), { role: 'agent', hostId: 'h3' }), { code: 'EACCES', message: /this credential is host h2's: it cannot speak for host h3/ });
  await t.rejects(connect(at(h2), { role: 'cli' }), { code: 'EPERM', message: /role cli is for the controller host's Unix socket/ });
  const { conn } = await connect(at(h2), { role: 'agent' });
  t.teardown(() => conn.close());
  conn.onRequest(async () => ({}));
  t.same((await conn.request('agent.register', { pid: 4242, leaseMs: 5000, disks: [] })).result, { claims: 0 }, 'a hello with no host id gets the certificate\'s');
  t.match(await ask('agent.ls'), [{ hostId: 'h1' }, { hostId: 'h2', pid: 4242 }]);
  await conn.close();
  t.same((await ask<Array<{ hostId: string }>>('agent.ls')).map((a) => a.hostId), ['h1']);
  await servingOthers(t);
});

t.test('host rm: the live connection is closed at once and the next handshake refused; a reissue replaces the old file', async (t) => {
  const h4 = await issue('h4');
  const a4 = await scriptedAgent('h4', 6, at(h4));
  const closed = a4.conn.closed;
  const r = await ask<{ closed: number }>('host.rm', { hostId: 'h4' });
  t.equal(r.closed, 1, 'one connection closed');
  await closed;
  t.match(a4.conn.peerError, { code: 'EACCES', message: /the credential of host h4 was revoked/ }, 'the agent was told why');
  t.same((await ask<Array<{ hostId: string }>>('agent.ls')).map((a) => a.hostId), ['h1'], 'h4 is no longer an agent');
  await t.rejects(connect(at(h4), { role: 'agent' }), { code: 'EACCES', message: /the credential of host h4 was revoked/ });
  const h4b = await issue('h4');
  await t.rejects(connect(at(h4), { role: 'agent' }), { code: 'EACCES', message: /replaced by a newer credential/ }, 'the revoked file stays refused');
  const { conn } = await connect(at(h4b), { role: 'agent' });
  t.ok(conn.isOpen, 'the new credential is welcomed');
  await conn.close();
  await servingOthers(t);
});

t.test('plaintext on the TLS port gets no protocol at all', async (t) => {
  const before = controller.connections.size;
  const s = net.createConnection(addr.port, '127.0.0.1');
  const decoder = new FrameDecoder();
  let frames = 0;
  let undecodable = false;
  s.on('data', (c: Buffer) => {
    try {
      frames += decoder.push(c).length;
    } catch {
      undecodable = true;
    }
  });
  s.on('error', () => undefined);
  const ended = new Promise<void>((resolve) => s.once('close', () => resolve()));
  s.write(hello('h1'));
  s.write(encodeJson({ type: 'req', id: 1, op: 'controller.status', args: {} }));
  await ended;
  t.equal(frames, 0, 'no frame came back');
  t.ok(undecodable || frames === 0, 'at most a TLS alert, which is no frame');
  t.equal(controller.connections.size, before, 'nothing reached the protocol');
  await servingOthers(t);
});

t.test('1,000 garbage frames from an authenticated host: each answered or its connection closed', async (t) => {
  const diskBefore = await ask('disk.info', { name: 'big' });
  // 900 well-formed frames with bad content on one welcomed and registered connection: each is answered.
  const raw = new RawTls(h2);
  await raw.secure;
  raw.write(hello());
  raw.write(encodeJson({ type: 'req', id: 1, op: 'agent.register', args: { pid: 1, leaseMs: 5000, disks: [] } }));
  const bad: Array<Record<string, unknown>> = [];
  const ops = ['fault', 'disk.ioerror', 'agent.register', 'agent.ping', 'disk.rm', 'controller.stop', 'host.add', 'host.rm', 'container.fail', 'nope', 'constructor'];
  const junk = [null, -1, 1.5, 'x', [], {}, 2 ** 53, true];
  for (let i = 0; i < 900; i++) {
    const op = ops[i % ops.length];
    const v = junk[i % junk.length];
    bad.push({ type: 'req', id: i + 2, op, args: { diskId: v, op: v, segment: v, first: v, count: v, leaseMs: v, disks: v, name: 'big', hostId: 'h1', states: v } });
  }
  raw.write(Buffer.concat(bad.map((m) => encodeJson(m))));
  const answered = (): number => raw.got.filter((m) => m.type === 'res').length;
  while (answered() < 901 && !raw.socket.destroyed) await new Promise((r) => raw.socket.once('data', r));
  t.equal(answered(), 901, 'every request answered');
  const res = raw.got.filter((m): m is Extract<Message, { type: 'res' }> => m.type === 'res');
  const wins = res.filter((m) => m.ok && m.id > 1);
  t.ok(wins.every((m) => bad[m.id - 2].op === 'agent.ping' || bad[m.id - 2].op === 'agent.register'), 'only pings and registrations succeed');
  t.ok(res.filter((m) => !m.ok).every((m) => !m.ok && /^(EPERM|EINVAL|EUNKNOWNOP|ENOENT|ERANGE)$/.test(m.error.code)),
    `refusals are EPERM, EINVAL, EUNKNOWNOP, ENOENT or ERANGE (${[...new Set(res.filter((m) => !m.ok).map((m) => !m.ok && m.error.code))].join(', ')})`);
  raw.socket.destroy();
  // 100 broken frames, each on its own authenticated connection: every one is closed with an error frame.
  const broken = (i: number): Buffer => {
    switch (i % 5) {
      case 0: return Buffer.from([5, 0, 0, 0, 1, 0x7b, 0x7b, 0x7b, 0x7b]); // invalid JSON
      case 1: return Buffer.from([2, 0, 0, 0, 9, 0]); // unknown frame type
      case 2: return Buffer.from([0xff, 0xff, 0xff, 0xff, 1]); // oversized length
      case 3: return encodeJson({ type: 'welcome', version: 1, serverId: 'x' }); // a server's message
      default: return encodeJson({ type: 'res', id: 'x', ok: 'maybe' });
    }
  };
  for (let i = 0; i < 100; i++) {
    const c = new RawTls(h2);
    await c.secure;
    c.write(hello());
    while (!c.got.some((m) => m.type === 'welcome') && !c.socket.destroyed) await new Promise((r) => c.socket.once('data', r));
    c.write(broken(i));
    await c.ended;
    t.equal(c.got.at(-1)?.type, 'error', `broken frame ${i}: an error frame, then closed`);
  }
  t.same(await ask('disk.info', { name: 'big' }), diskBefore, 'the disk is as it was');
  t.match(await ask('check'), { ok: true });
  t.match(await ask('host.ls'), [{ hostId: 'h1', revokedAt: null }, { hostId: 'h2', revokedAt: null }, { hostId: 'h4', revokedAt: null }], 'no credential changed');
  await servingOthers(t);
  t.ok(cli.isOpen);
});

t.test('agent.stop reaches a TLS agent through its connection', async (t) => {
  const seen: string[] = [];
  const { conn } = await connect(at(h2), { role: 'agent' }) as { conn: Connection };
  conn.onRequest(async (op) => { seen.push(op); return {}; });
  await conn.request('agent.register', { pid: 77, leaseMs: 5000, disks: [] });
  t.same(await ask('agent.stop', { hostId: 'h2' }), { pid: 77 });
  t.ok(seen.includes('agent.exit'), 'the agent was told to exit');
  await conn.close();
});

t.test('both ends of a TLS connection send without Nagle: faults in flight together are not held for ACKs', async (t) => {
  // Nagle's algorithm held each small answer until the last was acknowledged: 16 and 64 faults at a time over
  // TLS ran at 0.4-0.5 of the Unix socket's rate. Seen here as the calls made on each end's TCP socket.
  const calls: Array<{ socket: net.Socket; on: boolean | undefined }> = [];
  const real = net.Socket.prototype.setNoDelay;
  net.Socket.prototype.setNoDelay = function (this: net.Socket, on?: boolean) {
    calls.push({ socket: this, on });
    return real.call(this, on);
  };
  t.teardown(() => { net.Socket.prototype.setNoDelay = real; });
  const { conn } = await connect(at(h2), { role: 'agent' }) as { conn: Connection };
  t.teardown(() => conn.close());
  const client = conn.socket as net.Socket;
  const nodelay = (s: net.Socket) => calls.some((c) => c.socket === s && c.on !== false);
  t.ok(nodelay(client), 'the agent\'s end sets TCP_NODELAY');
  const serverEnd = calls.find((c) => c.socket !== client && c.socket.remotePort === client.localPort);
  t.ok(serverEnd && serverEnd.on !== false, 'and so does the controller\'s end of the same connection');
});
