// Controller protocol over real Unix sockets: handshake, request matching, errors, timeouts, payloads, and
// a server that survives every kind of malformed client and keeps serving the next one.
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { VdiskError } from '../../src/errors.js';
import { connect } from '../../src/protocol/client.js';
import { MAX_HELD, MAX_HELD_EVENT_BYTES, type Connection } from '../../src/protocol/connection.js';
import { encodeJson, FrameDecoder, type Frame } from '../../src/protocol/frame.js';
import { startServer, type ProtocolServer, type ServerOptions } from '../../src/protocol/server.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vdisk-proto-'));
t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
let seq = 0;
const newPath = (): string => path.join(dir, `c${seq++}.sock`);
/** The part of a tap test the helpers need. */
interface Teardown { teardown(fn: () => unknown): void }
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Test ops: echo, sleep {ms, v}, fail, plain, never, bigint (unencodable), reverse (payload). */
async function handler(op: string, args: Record<string, unknown>, payload?: Buffer): Promise<unknown> {
  switch (op) {
    case 'echo': return args;
    case 'sleep': await sleep(args.ms as number); return args.v;
    case 'fail': throw new VdiskError('it broke', { code: 'ENOPE' });
    case 'plain': throw new Error('plain failure');
    case 'never': return new Promise(() => undefined);
    case 'bigint': return { big: 1n };
    case 'reverse': return { result: { n: payload?.length ?? -1 }, payload: Buffer.from(payload ?? []).reverse() };
    default: throw new VdiskError(`unknown op ${op}`, { code: 'EUNKNOWNOP' });
  }
}

interface Served { p: string; srv: ProtocolServer; conns: Connection[] }

async function serve(t: Teardown, opts: Partial<ServerOptions> = {}): Promise<Served> {
  const p = newPath();
  const conns: Connection[] = [];
  const srv = await startServer(p, {
    serverId: 'ctl-1',
    onConnection(conn) {
      conns.push(conn);
      conn.onRequest(handler);
    },
    ...opts,
  });
  t.teardown(() => srv.close());
  return { p, srv, conns };
}

async function client(t: Teardown, p: string): Promise<Connection> {
  const { conn } = await connect(p, { role: 'cli' });
  t.teardown(() => conn.close());
  return conn;
}

/** A client that speaks bytes, not the protocol, to feed the server whatever a test needs. */
class Raw {
  readonly frames: Frame[] = [];
  readonly closed: Promise<void>;
  private readonly decoder = new FrameDecoder();
  private wake: () => void = () => undefined;

  private constructor(readonly socket: net.Socket) {
    socket.on('data', (c: Buffer) => {
      this.frames.push(...this.decoder.push(c));
      this.wake();
    });
    socket.on('error', () => undefined);
    this.closed = new Promise((r) => socket.once('close', () => r()));
    void this.closed.then(() => this.wake());
  }

  static async open(p: string): Promise<Raw> {
    const s = net.createConnection(p);
    await new Promise((r) => s.once('connect', r));
    return new Raw(s);
  }

  async next(): Promise<Record<string, unknown>> {
    while (this.frames.length === 0) {
      if (this.socket.destroyed) throw new Error('closed without a frame');
      await new Promise<void>((r) => (this.wake = r));
    }
    const f = this.frames.shift() as Frame;
    return f.kind === 'json' ? f.msg : f.header;
  }

  async hello(): Promise<Record<string, unknown>> {
    this.socket.write(encodeJson({ type: 'hello', version: 1, role: 'agent', hostId: 'h' }));
    return this.next();
  }
}

async function stillServes(t: Teardown & { same(a: unknown, b: unknown, m: string): void }, p: string): Promise<void> {
  const conn = await client(t, p);
  t.same((await conn.request('echo', { still: 'alive' })).result, { still: 'alive' }, 'server still serves');
}

t.test('handshake, and welcome carries the server id', async (t) => {
  const { p, conns } = await serve(t);
  const { conn, welcome } = await connect(p, { role: 'agent', hostId: 'host-a' });
  t.teardown(() => conn.close());
  t.same(welcome, { type: 'welcome', version: 1, serverId: 'ctl-1' });
  t.same((await conn.request('echo', { x: 1 })).result, { x: 1 });
  t.equal(conns.length, 1);
});

t.test('an onConnection that throws closes that connection with its code', async (t) => {
  const { p } = await serve(t, {
    onConnection() {
      throw new VdiskError('host not registered', { code: 'EDENIED' });
    },
  });
  const { conn } = await connect(p, { role: 'agent', hostId: 'stranger' });
  await conn.closed;
  t.match(conn.peerError, { code: 'EDENIED', message: /host not registered/ });
  await t.rejects(conn.request('echo'), { code: 'ECONNRESET' });
});

t.test('wrong version is refused with EVERSION and closed', async (t) => {
  const { p } = await serve(t);
  const raw = await Raw.open(p);
  raw.socket.write(encodeJson({ type: 'hello', version: 2, role: 'cli' }));
  t.match(await raw.next(), { type: 'error', code: 'EVERSION', message: /version 2.*version 1/ });
  await raw.closed;

  // The client checks the other direction: a controller answering with another version.
  const fake = net.createServer((s) => s.end(encodeJson({ type: 'welcome', version: 2, serverId: 'x' })));
  const fp = newPath();
  await new Promise<void>((r) => fake.listen(fp, r));
  t.teardown(() => fake.close());
  await t.rejects(connect(fp, { role: 'cli' }), { code: 'EVERSION' });
  await stillServes(t, p);
});

t.test('connect reports a refusal with its code, and a silent server as ETIMEDOUT', async (t) => {
  const replies = [encodeJson({ type: 'error', code: 'EBUSY', message: 'go away' })];
  const fake = net.createServer((s) => {
    s.on('error', () => undefined);
    const r = replies.shift();
    if (r) s.end(r);
    else t.teardown(() => s.destroy());
  });
  const fp = newPath();
  await new Promise<void>((r) => fake.listen(fp, r));
  t.teardown(() => fake.close());
  await t.rejects(connect(fp, { role: 'cli' }), { code: 'EBUSY', message: /refused the connection: go away/ });
  await t.rejects(connect(fp, { role: 'cli', timeoutMs: 100 }), { code: 'ETIMEDOUT' });
  await t.rejects(connect(fp, { role: 'agent', hostId: '' }), { code: 'EINVAL' });
});

t.test('replies answered out of order reach the right callers', async (t) => {
  const { p } = await serve(t);
  const conn = await client(t, p);
  const order: string[] = [];
  const slow = conn.request('sleep', { ms: 80, v: 'slow' }).then((r) => (order.push('slow'), r.result));
  const fast = conn.request('sleep', { ms: 5, v: 'fast' }).then((r) => (order.push('fast'), r.result));
  const echo = conn.request('echo', { k: 3 });
  t.same(await Promise.all([slow, fast, echo.then((r) => r.result)]), ['slow', 'fast', { k: 3 }]);
  t.same(order, ['fast', 'slow']);
});

t.test('handler errors arrive with their code', async (t) => {
  const { p } = await serve(t);
  const conn = await client(t, p);
  await t.rejects(conn.request('fail'), { code: 'ENOPE', message: 'it broke' });
  await t.rejects(conn.request('plain'), { code: 'EFAIL', message: 'plain failure' });
  await t.rejects(conn.request('nosuch.op'), { code: 'EUNKNOWNOP' });
  await t.rejects(conn.request('bigint'), { code: 'EFAIL', message: /BigInt/ }, 'an unencodable result');
  await t.rejects(conn.request('Bad-op'), { code: 'EINVAL' }, 'a malformed op is refused locally');
  t.same((await conn.request('echo', {})).result, {}, 'connection unaffected');
});

t.test('timeouts reject with ETIMEDOUT and late replies are dropped', async (t) => {
  const { p } = await serve(t);
  const conn = await client(t, p);
  await t.rejects(conn.request('sleep', { ms: 60, v: 'late' }, { timeoutMs: 20 }), { code: 'ETIMEDOUT' });
  await sleep(80);
  t.same((await conn.request('echo', { after: true })).result, { after: true });
});

t.test('closing rejects pending requests with ECONNRESET', async (t) => {
  const { p, srv } = await serve(t);
  const a = await client(t, p);
  const pending = a.request('never');
  void a.close();
  await t.rejects(pending, { code: 'ECONNRESET' });
  await t.rejects(a.request('echo'), { code: 'ECONNRESET' }, 'and later requests');

  const b = await client(t, p);
  const waiting = b.request('never');
  await srv.close();
  await t.rejects(waiting, { code: 'ECONNRESET' }, 'server closing');
  t.notOk(fs.existsSync(p), 'socket unlinked');
});

t.test('binary payloads travel both ways; events reach a late handler', async (t) => {
  let agentSide: Connection | undefined;
  let early: Promise<unknown> | undefined;
  const { p } = await serve(t, {
    onConnection(conn) {
      agentSide = conn;
      conn.onRequest(handler);
      conn.sendEvent('welcome.table', { n: 2 }, Buffer.from([1, 2]));
      early = conn.request('early.ping', { at: 'once' });
    },
  });
  const conn = await client(t, p);
  const table = Buffer.alloc(16 << 20);
  for (let i = 0; i < table.length; i += 511) table[i] = (i >> 9) & 0xff;
  const r = await conn.request('reverse', {}, { payload: table });
  t.same(r.result, { n: table.length });
  t.ok(r.payload?.equals(Buffer.from(table).reverse()), '16 MiB came back reversed');

  const got = await new Promise<[string, unknown, Buffer | undefined]>((resolve) =>
    conn.onEvent((name, data, payload) => resolve([name, data, payload])));
  t.same(got, ['welcome.table', { n: 2 }, Buffer.from([1, 2])]);

  conn.onRequest(async (op, args, payload) =>
    ({ result: { op, args }, payload: Buffer.concat([payload ?? Buffer.alloc(0), Buffer.from('!')]) }));
  const back = await (agentSide as Connection).request('table.push', { v: 1 }, { payload: Buffer.from('tbl') });
  t.same(back.result, { op: 'table.push', args: { v: 1 } });
  t.equal(back.payload?.toString(), 'tbl!');
  t.match(await early, { result: { op: 'early.ping', args: { at: 'once' } } }, 'held until the handler came');
});

t.test('events held for a handler not installed are bounded in number and in bytes; the first are kept', async (t) => {
  const { p, conns } = await serve(t);
  const conn = await client(t, p);
  const big = Buffer.alloc(256 << 10, 7);
  for (let i = 0; i < 40; i++) conn.sendEvent('big', { i }, big); // 10 MiB
  for (let i = 0; i < 2 * MAX_HELD; i++) conn.sendEvent('small', { i });
  t.same((await conn.request('echo', { after: 'events' })).result, { after: 'events' }, 'every event arrived before this answer');
  const server = conns[0];
  const held = server.held;
  t.ok(held.eventBytes <= MAX_HELD_EVENT_BYTES, `${held.eventBytes} bytes held, at most ${MAX_HELD_EVENT_BYTES}`);
  t.ok(held.events > 3 && held.events <= MAX_HELD, `${held.events} events held, at most ${MAX_HELD}`);
  const got: Array<[string, number, number]> = [];
  server.onEvent((name, data, payload) => { got.push([name, (data as { i: number }).i, payload?.length ?? 0]); });
  t.same(got.slice(0, 4), [['big', 0, big.length], ['big', 1, big.length], ['big', 2, big.length], ['small', 0, 0]], 'the first ones, in order');
  t.equal(got.length, held.events, 'all that were held reach the handler');
  t.same(server.held, { requests: 0, events: 0, eventBytes: 0 }, 'and nothing is held any more');
});

t.test('maxServing: requests beyond it are refused at once with EBUSY; the connection goes on', async (t) => {
  const { p, conns } = await serve(t);
  const conn = await client(t, p);
  t.same((await conn.request('echo', { first: 1 })).result, { first: 1 });
  conns[0].maxServing = 2;
  const order: string[] = [];
  const slow = ['a', 'b'].map((v) => conn.request('sleep', { ms: 100, v }).then((x) => { order.push(v); return x.result; }));
  await t.rejects(conn.request('sleep', { ms: 100, v: 'c' }), { code: 'EBUSY', message: /2 requests are in flight/ }, 'a third one is refused');
  t.same(order, [], 'at once, before the two in flight are answered');
  t.same(await Promise.all(slow), ['a', 'b'], 'which they are');
  t.same((await conn.request('echo', { after: 1 })).result, { after: 1 }, 'and once they are, the next is served');
  await t.rejects(Promise.all([conn.request('fail'), conn.request('plain')]), { code: 'ENOPE' }, 'failed requests count out too');
  t.same(await Promise.all([conn.request('echo', { x: 1 }), conn.request('echo', { x: 2 })]).then((r) => r.map((x) => x.result)), [{ x: 1 }, { x: 2 }]);
});

t.test('malformed clients get EPROTO and the server keeps serving', async (t) => {
  const { p } = await serve(t);
  const huge = Buffer.alloc(4);
  huge.writeUInt32LE(0x7fffffff, 0);
  const cases: Array<[string, Buffer, boolean]> = [
    ['garbage bytes', Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'), true],
    ['oversized length prefix', huge, true],
    ['invalid JSON', Buffer.concat([Buffer.from([6, 0, 0, 0, 1]), Buffer.from('{"a":')]), true],
    ['unknown frame type', Buffer.concat([Buffer.from([3, 0, 0, 0, 7]), Buffer.from('{}')]), true],
    ['first frame not a hello', encodeJson({ type: 'req', id: 1, op: 'echo', args: {} }), true],
    ['truncated frame then close', encodeJson({ type: 'hello', version: 1, role: 'cli' }).subarray(0, 12), false],
  ];
  for (const [name, bytes, answered] of cases) {
    const raw = await Raw.open(p);
    raw.socket.write(bytes);
    if (!answered) raw.socket.end();
    await raw.closed;
    if (answered) t.match(raw.frames, [{ kind: 'json', msg: { type: 'error', code: 'EPROTO' } }], name);
    else t.same(raw.frames, [], name);
    await stillServes(t, p);
  }
});

t.test('violations after the handshake; unknown reply ids are ignored', async (t) => {
  const { p } = await serve(t);
  const raw = await Raw.open(p);
  t.match(await raw.hello(), { type: 'welcome', version: 1, serverId: 'ctl-1' });
  raw.socket.write(encodeJson({ type: 'res', id: 999, ok: true, result: 1 }));
  raw.socket.write(encodeJson({ type: 'req', id: 1, op: 'echo', args: { a: 1 } }));
  t.match(await raw.next(), { type: 'res', id: 1, ok: true, result: { a: 1 } });
  raw.socket.write(encodeJson({ type: 'hello', version: 1, role: 'cli' }));
  t.match(await raw.next(), { type: 'error', code: 'EPROTO', message: /unexpected hello/ });
  await raw.closed;

  // A client that is sent garbage reports the server's complaint on its pending requests.
  const conn = await client(t, p);
  const pending = conn.request('never');
  conn.socket.write(Buffer.from([1, 0, 0, 0, 9]));
  await t.rejects(pending, { code: 'ECONNRESET', message: /unknown frame type 9/ });
  t.equal(conn.peerError?.code, 'EPROTO');
  await stillServes(t, p);
});

t.test('a client that never says hello is closed after the handshake timeout', async (t) => {
  const { p } = await serve(t, { handshakeTimeoutMs: 100 });
  const raw = await Raw.open(p);
  await raw.closed;
  t.match(raw.frames, [{ kind: 'json', msg: { type: 'error', code: 'ETIMEDOUT' } }]);
  await stillServes(t, p);
});

t.test('the socket: 0600, one controller per path, stale files replaced', async (t) => {
  const { p } = await serve(t);
  t.equal(fs.statSync(p).mode & 0o777, 0o600);
  await t.rejects(startServer(p, { serverId: 'two', onConnection() {} }),
    { code: 'EADDRINUSE', message: `a controller is already running on ${p}` });
  await stillServes(t, p);

  // A hard link keeps the socket inode after its listener is gone: a socket file nobody listens on.
  const stale = newPath();
  const tmp = newPath();
  const old = net.createServer();
  await new Promise<void>((r) => old.listen(tmp, r));
  fs.linkSync(tmp, stale);
  await new Promise((r) => old.close(r));
  await t.rejects(connect(stale, { role: 'cli' }), { code: 'ECONNREFUSED', message: /no controller is running/ });
  const srv = await startServer(stale, { serverId: 'ctl-1', onConnection: (c) => c.onRequest(handler) });
  t.teardown(() => srv.close());
  await stillServes(t, stale);

  const file = newPath();
  fs.writeFileSync(file, 'not a socket');
  await t.rejects(startServer(file, { serverId: 'x', onConnection() {} }), { code: 'EEXIST' });
  t.equal(fs.readFileSync(file, 'utf8'), 'not a socket', 'a regular file is left alone');
  await t.rejects(connect(newPath(), { role: 'cli' }), { code: 'ENOENT', message: /no controller is running \(no socket at / });
});
