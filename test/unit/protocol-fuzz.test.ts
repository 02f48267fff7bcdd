// Protocol fuzz (issue 12 item 5): a real controller process, with a container, a thin disk with mapped
// segments and a thick disk with a snapshot, gets N hostile frames (VDISK_FUZZ_FRAMES, default 1,000) over
// its Unix socket from many connections: random bytes, truncated frames, oversized or zero length prefixes,
// unknown type bytes, broken binary frames, invalid JSON and UTF-8, JSON of the wrong shape, bad hellos, and,
// on welcomed cli and agent connections, every request the controller handles with type-confused, missing and
// out-of-range arguments, agent requests from a cli or before agent.register, cli requests (controller.stop
// too) from agents, and unknown operations. What a connection must get is computed by a model of the framing
// and the handshake (this file's `judge`); every connection must be answered or closed within WAIT_MS. A separate well-behaved connection is answered every
// 100 frames; afterwards the process lives, `check` is clean, the disks and containers are as they were,
// nothing was allocated, no file was made or grown, and the stopped database passes PRAGMA integrity_check.
// The cases come from a seeded PRNG: the seed is printed, VDISK_FUZZ_SEED=N replays it.
import t from 'tap';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import sqlite3 from 'sqlite3';
import type { Container, Disk } from '../../src/controller/store.js';
import { socketPath } from '../../src/controller/paths.js';
import { FAULT_DISCARD, FAULT_READ, FAULT_RECLAIM, FAULT_WRITE } from '../../src/protocol/fault-ops.js';
import { connect } from '../../src/protocol/client.js';
import { decodeBody, encodeJson, FrameDecoder, MAX_FRAME } from '../../src/protocol/frame.js';
import { messageOfFrame, PROTOCOL_VERSION, type Message, type ResponseMessage } from '../../src/protocol/messages.js';
import { HANDSHAKE_TIMEOUT_MS } from '../../src/protocol/server.js';
import { STATE_ERROR, STATE_NO_WRITE, STATE_ZERO } from '../../src/table/mapping-table.js';
import { runCli } from '../support/cli.js';

const FRAMES = Number(process.env.VDISK_FUZZ_FRAMES ?? 1000);
if (!Number.isSafeInteger(FRAMES) || FRAMES < 1) throw new Error(`VDISK_FUZZ_FRAMES must be a positive integer, not ${process.env.VDISK_FUZZ_FRAMES}`);
const SEED = process.env.VDISK_FUZZ_SEED !== undefined ? Number(process.env.VDISK_FUZZ_SEED) : crypto.randomInt(2 ** 31);
if (!Number.isSafeInteger(SEED) || SEED < 0) throw new Error(`VDISK_FUZZ_SEED must be a non-negative integer, not ${process.env.VDISK_FUZZ_SEED}`);
/** How long the controller may take to answer or close a connection before that counts as a hang. */
const WAIT_MS = 5000;
/** Connections fuzzed at once. */
const JOBS = 4;
const SEG = 64 * 1024;
const MB = 1 << 20;
t.comment(`protocol fuzz: seed ${SEED} (replay with VDISK_FUZZ_SEED=${SEED}), ${FRAMES} frames`);

// ---- a seeded PRNG (mulberry32) and the helpers the generators draw with

class Rng {
  private a: number;
  constructor(seed: number) { this.a = seed >>> 0; }
  next(): number {
    this.a = (this.a + 0x6d2b79f5) >>> 0;
    let x = this.a;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  }
  int(n: number): number { return Math.floor(this.next() * n); }
  range(lo: number, hi: number): number { return lo + this.int(hi - lo + 1); }
  chance(p: number): boolean { return this.next() < p; }
  pick<T>(list: readonly T[]): T { return list[this.int(list.length)]; }
  bytes(n: number): Buffer {
    const b = Buffer.alloc(n);
    for (let i = 0; i < n; i++) b[i] = this.int(256);
    return b;
  }
}

// ---- the controller, its state, and the files refused requests must leave alone

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'vdisk-fuzz-'));
const data = path.join(root, 'data');
/** Every path a fuzzed request names lies here (or is c1.img); its listing must not change. */
const scratch = path.join(root, 'scratch');
fs.mkdirSync(scratch);
const img = path.join(root, 'c1.img');
/** An existing file that is no container: container.add may name it, a refused one must not grow it. */
const sentinel = path.join(scratch, 'sentinel.img');
fs.writeFileSync(sentinel, Buffer.alloc(SEG, 0x5a));
const sock = socketPath(data);
/** Whether this file system refuses a file of 2^53-1 bytes (ext4 does; tmpfs or xfs would make one). */
const hugeRefused = ((): boolean => {
  const f = path.join(root, 'probe');
  fs.writeFileSync(f, '');
  try {
    fs.truncateSync(f, Number.MAX_SAFE_INTEGER);
    return false;
  } catch {
    return true;
  } finally {
    fs.rmSync(f, { force: true });
  }
})();

const started = await runCli(['controller', 'start'], data);
if (started.status !== 0) throw new Error(`controller start: ${started.err}`);
let stopped = false;
t.teardown(async () => {
  if (!stopped) await runCli(['controller', 'stop'], data);
  fs.rmSync(root, { recursive: true, force: true });
});

const monitor = (await connect(sock, { role: 'cli' })).conn;
const ask = async <T>(op: string, args: Record<string, unknown> = {}): Promise<T> => (await monitor.request(op, args, { timeoutMs: WAIT_MS })).result as T;
const { pid } = await ask<{ pid: number }>('controller.status');
await ask('container.add', { name: 'c1', path: img, size: 16 * MB });
const thin = await ask<Disk>('disk.create', { name: 'thin', size: 16 * SEG, segmentSize: SEG });
const thick = await ask<Disk>('disk.create', { name: 'thick', size: 4 * SEG, segmentSize: SEG, thick: true });
const snap = await ask<Disk>('disk.snapshot', { name: 'thick', snapshot: 'thick-snap' });
{
  // Two mapped segments in the thin disk, from a well-behaved agent that then goes away.
  const setup = (await connect(sock, { role: 'agent', hostId: 'fz-setup' })).conn;
  setup.onRequest(async () => ({}));
  await setup.request('agent.register', { pid: process.pid, leaseMs: 5000, disks: [] });
  for (const segment of [0, 1]) await setup.request('fault', { diskId: thin.id, op: FAULT_WRITE, segment, states: STATE_ZERO, offset: 0, length: 4096 });
  await setup.close();
}

type Shape = { containers: unknown[]; disks: unknown[] };
const shape = async (): Promise<Shape> => ({
  containers: (await ask<Container[]>('container.ls')).map((c) => ({ id: c.id, name: c.name, size: c.size, usedBytes: c.usedBytes, failed: c.failed })),
  disks: (await ask<Disk[]>('disk.ls')).map((d) => ({ id: d.id, name: d.name, size: d.size, segmentSize: d.segmentSize, readOnly: d.readOnly })),
});
const before = await shape();
const listing = (): string[] => fs.readdirSync(scratch).sort();
const digest = (f: string): string => crypto.createHash('sha256').update(fs.readFileSync(f)).digest('hex');
const scratchBefore = listing();
const sentinelBefore = digest(sentinel);

// ---- a raw peer: writes whatever bytes it is given, decodes what the controller sends

class Peer {
  readonly socket: net.Socket;
  readonly connected: Promise<boolean>;
  private readonly decoder = new FrameDecoder();
  private readonly listeners = new Set<() => void>();
  readonly responses = new Map<number, ResponseMessage>();
  welcomed = false;
  errorFrame: { code: string; message: string } | undefined;
  /** Something the controller sent that does not decode: a bug on its side. */
  garbage: string | undefined;
  closed = false;
  events = 0;

  /** `answer`: this peer plays an agent and refuses every command the controller sends it. */
  constructor(readonly answer = false) {
    this.socket = net.createConnection(sock);
    this.connected = new Promise((resolve) => {
      this.socket.once('connect', () => resolve(true));
      this.socket.once('close', () => resolve(false));
    });
    this.socket.on('error', () => undefined); // EPIPE or ECONNRESET once the controller has closed; 'close' follows
    this.socket.on('close', () => { this.closed = true; this.notify(); });
    this.socket.on('data', (chunk: Buffer) => this.onData(chunk));
  }

  private onData(chunk: Buffer): void {
    try {
      for (const f of this.decoder.push(chunk)) this.onMessage(messageOfFrame(f).msg);
    } catch (err) {
      this.garbage ??= (err as Error).message;
    }
    this.notify();
  }

  private onMessage(msg: Message): void {
    switch (msg.type) {
      case 'welcome': this.welcomed = true; return;
      case 'error': this.errorFrame = { code: msg.code, message: msg.message }; return;
      case 'res': this.responses.set(msg.id, msg); return;
      case 'event': this.events++; return;
      case 'req':
        if (this.answer) this.write(encodeJson({ type: 'res', id: msg.id, ok: false, error: { code: 'EUNKNOWNOP', message: 'the fuzz agent refuses' } }));
        return;
      default: this.garbage ??= `unexpected ${msg.type} from the controller`;
    }
  }

  private notify(): void {
    for (const l of [...this.listeners]) l();
  }

  write(b: Buffer): void {
    if (!this.socket.destroyed && this.socket.writable) this.socket.write(b);
  }

  /** Resolves true once pred holds, false after ms. */
  until(pred: () => boolean, ms: number): Promise<boolean> {
    if (pred()) return Promise.resolve(true);
    return new Promise((resolve) => {
      const check = (): void => { if (pred()) done(true); };
      const timer = setTimeout(() => done(false), ms);
      const done = (v: boolean): void => {
        clearTimeout(timer);
        this.listeners.delete(check);
        resolve(v);
      };
      this.listeners.add(check);
    });
  }

  destroy(): void {
    this.socket.destroy();
  }
}

// ---- frames, and the model of what the controller must do with a byte stream

const frameOf = (type: number, body: Buffer): Buffer => {
  const out = Buffer.alloc(5 + body.length);
  out.writeUInt32LE(1 + body.length, 0);
  out[4] = type;
  body.copy(out, 5);
  return out;
};
const jsonFrame = (text: string | Buffer): Buffer => frameOf(1, typeof text === 'string' ? Buffer.from(text) : text);
/** A binary frame; headerLen may lie about the header's length. */
const binFrame = (header: string, payload: Buffer, headerLen = Buffer.byteLength(header)): Buffer => {
  const h = Buffer.from(header);
  const body = Buffer.alloc(4 + h.length + payload.length);
  body.writeUInt32LE(headerLen >>> 0, 0);
  h.copy(body, 4);
  payload.copy(body, 4 + h.length);
  return frameOf(2, body);
};
const helloText = (role: string, hostId?: string): string =>
  JSON.stringify({ type: 'hello', version: PROTOCOL_VERSION, role, ...(hostId === undefined ? {} : { hostId }) });
const reqText = (id: number, op: string, args = '{}'): string => `{"type":"req","id":${id},"op":${JSON.stringify(op)},"args":${args}}`;
const PROBE_ID = 2 ** 31;

/**
 * What the controller must do with `stream`: 'error' (an error frame with one of `codes`, then close),
 * 'error-or-closed' (a bad first message followed by more: which complaint wins depends on the chunking),
 * 'closed' (the peer sent an error message: the controller just closes), 'eof' (a frame is incomplete: the
 * controller waits, and closes once the peer does), or 'open' (the connection stays up; `reqs` get answers).
 */
interface Verdict { end: 'error' | 'error-or-closed' | 'closed' | 'eof' | 'open'; codes: string[]; reqs: number[] }

function judge(stream: Buffer, open: boolean): Verdict {
  let state: 'handshake' | 'open' | 'badfirst' = open ? 'open' : 'handshake';
  let badCode = 'EPROTO';
  let units = 0;
  const reqs: number[] = [];
  const violation = (): Verdict => (state === 'badfirst' ? { end: 'error-or-closed', codes: ['EPROTO', 'EVERSION'], reqs } : { end: 'error', codes: ['EPROTO'], reqs });
  let off = 0;
  while (off < stream.length) {
    if (stream.length - off < 4) break;
    const len = stream.readUInt32LE(off);
    if (len === 0 || len > MAX_FRAME) return violation();
    if (stream.length - off - 4 < len) break;
    const body = stream.subarray(off + 4, off + 4 + len);
    off += 4 + len;
    let msg: Message;
    try {
      msg = messageOfFrame(decodeBody(body)).msg;
    } catch {
      return violation();
    }
    units++;
    if (state === 'badfirst') continue;
    if (state === 'handshake') {
      if (msg.type === 'hello' && msg.version === PROTOCOL_VERSION) state = 'open';
      else {
        state = 'badfirst';
        badCode = msg.type === 'hello' ? 'EVERSION' : 'EPROTO';
      }
      continue;
    }
    switch (msg.type) {
      case 'hello': case 'welcome': return { end: 'error', codes: ['EPROTO'], reqs };
      case 'error': return { end: 'closed', codes: [], reqs };
      case 'req': reqs.push(msg.id); break;
      default: break; // responses with no request and events are dropped
    }
  }
  if (state === 'badfirst') {
    return units === 1 && off === stream.length ? { end: 'error', codes: [badCode], reqs } : { end: 'error-or-closed', codes: ['EPROTO', 'EVERSION'], reqs };
  }
  if (off < stream.length || state === 'handshake') return { end: 'eof', codes: [], reqs };
  return { end: 'open', codes: [], reqs };
}

// ---- the requests the controller handles, and the arguments that must make each one fail

/** The handlers in controller.ts, read from its source: a new operation without a spec here fails the test. */
function handledOps(): string[] {
  const src = fs.readFileSync(new URL('../../../src/controller/controller.ts', import.meta.url), 'utf8');
  const block = src.slice(src.indexOf('private readonly handlers'), src.indexOf('\n  };\n', src.indexOf('private readonly handlers')));
  return [...block.matchAll(/^ {4}'([a-z][a-zA-Z0-9.]*)': async/gm)].map((m) => m[1]).sort();
}

/** 'read': may succeed and changes nothing; 'write': always sent with a poisoned argument; 'refused': always refused here (c1 is in use, the fuzz agents refuse every command). */
type Mode = 'read' | 'write' | 'refused';
type Kind = 'diskRef' | 'snapRef' | 'newDisk' | 'contRef' | 'newCont' | 'contPath' | 'backupPath' | 'size' | 'contSize' | 'segSize' | 'bool' | 'cow'
  | 'partial' | 'hostId' | 'hostPaths' | 'smallInt' | 'diskId' | 'segment' | 'first' | 'count' | 'bits' | 'faultOp' | 'optInt' | 'leaseMs' | 'pid' | 'disks' | 'progress'
  | 'claims' | 'diskClaims' | 'want';
/** `agent`: for agents only (else for the cli only, unless `anyone`); `from`: sent only from these peers. */
interface Spec { op: string; args: Record<string, Kind>; optional?: string[]; mode: Mode; agent?: boolean; anyone?: boolean; from?: PeerName[] }

const SPECS: Spec[] = [
  { op: 'controller.status', args: {}, mode: 'read', anyone: true },
  // From an agent it is refused; from the cli it would stop the controller (that is what it is for).
  { op: 'controller.stop', args: {}, mode: 'refused', from: ['agentA', 'agentB', 'lone', 'nohost'] },
  { op: 'controller.backup', args: { path: 'backupPath' }, mode: 'write' },
  { op: 'stats', args: {}, mode: 'read' },
  { op: 'container.add', args: { name: 'newCont', path: 'contPath', size: 'contSize' }, optional: ['size'], mode: 'write' },
  { op: 'container.set', args: { name: 'contRef', hostPaths: 'hostPaths' }, mode: 'write' },
  { op: 'container.ls', args: {}, mode: 'read' },
  { op: 'container.rm', args: { name: 'contRef' }, mode: 'refused' },
  { op: 'container.fail', args: { name: 'contRef' }, mode: 'write' },
  {
    op: 'disk.create', mode: 'write', optional: ['segmentSize', 'container', 'thick', 'cow', 'partial'],
    args: { name: 'newDisk', size: 'size', segmentSize: 'segSize', container: 'contRef', thick: 'bool', cow: 'cow', partial: 'partial' },
  },
  { op: 'disk.ls', args: {}, mode: 'read' },
  { op: 'disk.info', args: { name: 'diskRef' }, mode: 'read' },
  { op: 'disk.migrate', args: { name: 'diskRef', to: 'contRef' }, mode: 'write' },
  { op: 'disk.snapshot', args: { name: 'diskRef', snapshot: 'newDisk' }, mode: 'write' },
  { op: 'disk.clone', args: { snapshot: 'snapRef', name: 'newDisk', cow: 'cow', partial: 'partial' }, optional: ['cow', 'partial'], mode: 'write' },
  { op: 'disk.fold', args: { name: 'diskRef', progress: 'progress' }, optional: ['progress'], mode: 'read' },
  { op: 'check', args: { progress: 'progress' }, optional: ['progress'], mode: 'read' },
  { op: 'disk.attach', args: { name: 'diskRef', hostId: 'hostId', queues: 'smallInt', depth: 'smallInt' }, optional: ['queues', 'depth'], mode: 'refused' },
  { op: 'disk.detach', args: { name: 'diskRef', hostId: 'hostId', force: 'bool' }, optional: ['hostId', 'force'], mode: 'refused' },
  { op: 'disk.states', args: { name: 'diskRef', first: 'first', count: 'count', bits: 'bits', set: 'bool' }, optional: ['set'], mode: 'write' },
  { op: 'attachment.ls', args: {}, mode: 'read' },
  { op: 'agent.ls', args: {}, mode: 'read' },
  { op: 'agent.stop', args: { hostId: 'hostId' }, mode: 'refused' },
  { op: 'agent.register', args: { pid: 'pid', leaseMs: 'leaseMs', disks: 'disks', claims: 'diskClaims' }, optional: ['pid', 'leaseMs', 'disks', 'claims'], mode: 'read', agent: true },
  { op: 'agent.ping', args: {}, mode: 'read', agent: true },
  { op: 'disk.ioerror', args: { diskId: 'diskId', first: 'first', count: 'count' }, mode: 'write', agent: true },
  {
    op: 'fault', mode: 'write', agent: true, optional: ['states', 'offset', 'length'],
    args: { diskId: 'diskId', op: 'faultOp', segment: 'segment', states: 'optInt', offset: 'optInt', length: 'optInt' },
  },
  { op: 'fault.ahead', args: { diskId: 'diskId', segment: 'segment', from: 'segment' }, mode: 'write', agent: true },
  { op: 'disk.sync', args: { diskId: 'diskId', claims: 'claims' }, optional: ['claims'], mode: 'write', agent: true },
  { op: 'disk.grant', args: { diskId: 'diskId', want: 'want', claims: 'claims' }, optional: ['claims'], mode: 'write', agent: true },
  { op: 'disk.rm', args: { name: 'diskRef', progress: 'progress' }, optional: ['progress'], mode: 'write' },
  // No host has a credential here: host.rm always finds none to revoke; host.add always gets a poisoned id.
  { op: 'host.add', args: { hostId: 'hostId' }, mode: 'write' },
  { op: 'host.ls', args: {}, mode: 'read' },
  { op: 'host.rm', args: { hostId: 'hostId' }, mode: 'refused' },
];
/** Answered EUNKNOWNOP: names of Object.prototype, the agents' own commands, near misses. */
const UNKNOWN_OPS = [
  'constructor', 'toString', 'valueOf', 'hasOwnProperty', 'isPrototypeOf', 'propertyIsEnumerable', 'toLocaleString',
  'table.create', 'table.set', 'table.states', 'table.alt', 'table.delete', 'table.get', 'device.start', 'device.stop', 'device.recover',
  'containers.set', 'agent.exit', 'agent.status', 'disk', 'disk.', 'disk.lsx', 'controller.statuS', 'a.b.c', `z${'y'.repeat(63)}`,
];

const MISSING = '<missing>';
const long = (n: number): string => JSON.stringify('x'.repeat(n));
const deep = (n: number): string => '['.repeat(n) + ']'.repeat(n);
const NOT_STRING = ['5', '-1', '1.5', 'null', 'true', '[]', '["thin"]', '{}', '{"__proto__":{"name":"thin"}}', '{"toString":"thin"}'];
const NOT_INT = ['"1"', '1.5', '-1', 'null', 'true', '[]', '{}', '9007199254740992', '9007199254740993', '1e400', '-1e400', '"NaN"', '"Infinity"', '{"__proto__":{"valueOf":1}}'];
const BAD_NAMES = ['""', '"-x"', '".x"', '"a/b"', '"../thin"', '"a b"', '"é"', '"\\u0000"', long(65), long(4097)];
/** Anything at all: fillers for arguments that are not the poisoned one. */
const HOSTILE = [...NOT_STRING, ...NOT_INT, '""', '"x"', '0', '-0', '0.1', '9007199254740991', '4294967296', '"\\ud800"', '"💥"'];

const seq = { disk: 0, cont: 0, path: 0 };
const fresh = {
  disk: (): string => JSON.stringify(`fz-disk-${seq.disk++}`),
  cont: (): string => JSON.stringify(`fz-cont-${seq.cont++}`),
  path: (): string => JSON.stringify(path.join(scratch, `fresh-${seq.path++}.img`)),
};
const q = (s: string): string => JSON.stringify(s);
const DISK_NAMES = [q('thin'), q('thick'), q('thick-snap')];
const UNKNOWN_DISKS = [q('nope'), q('THIN'), q('thin '), q('thin\u0000'), q('thin\u0000x'), ...BAD_NAMES];

/** Valid values (or MISSING where the argument is optional) and values that must make the request fail. */
function values(kind: Kind): { valid: string[]; poison: string[] } {
  switch (kind) {
    case 'diskRef': return { valid: DISK_NAMES, poison: [...UNKNOWN_DISKS, ...NOT_STRING, MISSING] };
    case 'snapRef': return { valid: [q('thick-snap')], poison: [q('thin'), q('thick'), ...UNKNOWN_DISKS, ...NOT_STRING, MISSING] };
    case 'newDisk': return { valid: [fresh.disk()], poison: [...DISK_NAMES, ...BAD_NAMES, ...NOT_STRING, MISSING] };
    case 'contRef': return { valid: [q('c1')], poison: [q('nope'), q('C1'), q('c1\u0000'), '""', ...NOT_STRING] };
    case 'newCont': return { valid: [fresh.cont()], poison: [q('c1'), ...BAD_NAMES, ...NOT_STRING, MISSING] };
    case 'contPath': return {
      valid: [fresh.path(), q(sentinel)],
      poison: [q(img), q(scratch), q(path.join(scratch, 'no-such-dir', 'x.img')), '""', ...NOT_STRING, MISSING,
        // The controller's own files: thin allocations would write zeros into its database.
        ...['vdisk.db', 'vdisk.db-wal', 'vdisk.db-shm', 'controller.log', 'controller.sock', 'agent-fz-a.log'].map((f) => q(path.join(data, f))), q(data)],
    };
    case 'backupPath': return {
      valid: [],
      poison: [q(sentinel), q(img), q(scratch), q(path.join(scratch, 'no-such-dir', "it's.db")), q(path.join(scratch, 'no-such-dir', 'x\u0000.db')), '""', ...NOT_STRING, MISSING],
    };
    case 'size': return { valid: [String(MB), String(4 * SEG), String(16 * MB)], poison: ['0', '511', '513', '-512', '1.5', '"1M"', '9007199254740991', '18014398509481984', '1e400', 'null', MISSING] };
    case 'contSize': return { valid: [String(MB), String(4 * MB), MISSING], poison: ['1', '65535', '-1', '"1M"', '1.5', '9007199254740992', 'null', '[]'] };
    case 'segSize': return { valid: [String(SEG), String(MB), MISSING], poison: ['0', '12345', '32768', String(128 * MB), '"64K"', '-65536', '65536.5', 'null'] };
    case 'bool': return { valid: ['true', 'false', MISSING], poison: ['"true"', '1', '0', 'null', '[]'] };
    case 'cow': return { valid: [q('redirect'), q('copy-out'), MISSING], poison: [q('bogus'), q('REDIRECT'), '""', '5', 'null'] };
    case 'partial': return { valid: [q('bitmap'), q('copy'), MISSING], poison: [q('bogus'), '""', '5', 'null'] };
    case 'hostPaths': return {
      valid: ['{"fz-a":"/dev/null"}', '{"fz-b":null}'],
      poison: [MISSING, '{}', '[]', '"x"', '5', 'null', '{"bad host":"/x"}', '{"fz-a":"relative.img"}', '{"fz-a":5}', '{"fz-a":""}'],
    };
    case 'hostId': return { valid: [q('fz-a'), q('fz-b'), q('fz-setup'), q('nobody'), long(300)], poison: ['""', ...NOT_STRING] };
    case 'smallInt': return { valid: ['1', '4', '0', '9007199254740991', MISSING], poison: ['-1', '"4"', '1.5', 'null'] };
    case 'diskId': return { valid: [String(thin.id), String(thick.id), String(snap.id)], poison: ['0', '999999', '9007199254740991', ...NOT_INT, MISSING] };
    case 'segment': return { valid: ['0', '1', '3', '15'], poison: ['16', '17', '4294967296', '9007199254740991', ...NOT_INT, MISSING] };
    case 'first': return { valid: ['0', '1', '3'], poison: ['16', '4294967296', '9007199254740991', ...NOT_INT, MISSING] };
    case 'count': return { valid: ['0', '1', '4'], poison: ['17', '4294967296', '9007199254740991', ...NOT_INT, MISSING] };
    case 'bits': return { valid: [String(STATE_NO_WRITE), String(STATE_ERROR), String(STATE_ZERO)], poison: ['0', '256', '4294967295', ...NOT_INT, MISSING] };
    case 'faultOp': return { valid: [FAULT_READ, FAULT_WRITE, FAULT_DISCARD, FAULT_RECLAIM, 7].map(String), poison: [...NOT_INT, MISSING] };
    case 'optInt': return { valid: ['0', '4', '4096', '9007199254740991', MISSING], poison: NOT_INT };
    // 0.5 to 3600 s: a lost agent's lease is what blocking changes to its disks wait out.
    case 'leaseMs': return { valid: ['60000', '500', MISSING], poison: [...NOT_INT, '0', '499', '3600001', '9007199254740991'] };
    case 'pid': return { valid: [String(process.pid), '1', MISSING], poison: NOT_INT };
    case 'disks': return {
      valid: ['[]', MISSING, `[{"diskId":${thin.id},"devId":null}]`, '[{"diskId":999999,"devId":3}]'],
      poison: ['[null]', '[1,"x"]', '"x"', '{}', 'null', '5', `[{"diskId":${thick.id},"devId":-1}]`, `[{"devId":null}]`],
    };
    case 'progress': return { valid: ['true', 'false', '"yes"', MISSING], poison: [] };
    // Claims of storage never granted: refused one by one (and logged), never an error of the request.
    case 'claims': return {
      valid: ['[]', MISSING, `[{"segment":1,"container":1,"offset":${MB}}]`],
      poison: ['[null]', '"x"', '{}', '5', '[{"segment":-1,"container":1,"offset":0}]', '[{"segment":1,"container":1}]'],
    };
    case 'diskClaims': return {
      valid: ['[]', MISSING, `[{"diskId":${thin.id},"segment":2,"container":1,"offset":${2 * MB}}]`, '[{"diskId":999999,"segment":0,"container":1,"offset":0}]'],
      poison: ['[null]', '"x"', `[{"segment":1,"container":1,"offset":0}]`, `[{"diskId":${thin.id},"segment":1.5,"container":1,"offset":0}]`],
    };
    case 'want': return { valid: ['0', '2', '1024'], poison: ['1025', '-1', ...NOT_INT, MISSING] };
  }
}

// ---- the cases

type PeerName = 'cliA' | 'cliB' | 'agentA' | 'agentB' | 'lone' | 'nohost';
type Expect = 'refuse' | 'unknown' | 'any';
/** A raw connection: `hello` (when set) is sent and judged first, then the parts of the body, one write each. */
interface RawCase { kind: 'raw'; name: string; hello?: Buffer; parts: Buffer[]; frames: number; answer?: boolean }
/** A request on one of the long-lived, well-behaved connections: `args` is JSON text, sent as is. */
interface ReqCase { kind: 'req'; name: string; peer: PeerName; op: string; args: string; payload?: Buffer; expect: Expect; frames: 1 }
type Case = RawCase | ReqCase;

const specOf = new Map(SPECS.map((s) => [s.op, s]));

function requestCase(r: Rng, op: string, peer: PeerName, poisonAll = false): ReqCase {
  const spec = specOf.get(op);
  const payload = r.chance(0.15) ? r.bytes(r.int(2048)) : undefined;
  if (!spec) {
    const args = r.chance(0.5) ? '{}' : `{"name":${r.pick(HOSTILE)},"diskId":${r.pick(HOSTILE)},"x":${r.chance(0.1) ? deep(r.range(100, 20000)) : '1'}}`;
    return { kind: 'req', name: `${op} from ${peer}`, peer, op, args, payload, expect: 'unknown', frames: 1 };
  }
  const names = Object.keys(spec.args);
  const poisonable = names.filter((n) => values(spec.args[n]).poison.length > 0);
  const poisoned = new Set<string>();
  if ((spec.mode === 'write' || poisonAll || r.chance(0.3)) && poisonable.length) {
    poisoned.add(r.pick(poisonable));
    while (r.chance(0.2)) poisoned.add(r.pick(poisonable));
  }
  const fields: string[] = [];
  const described: string[] = [];
  for (const n of names) {
    const v = values(spec.args[n]);
    let value: string;
    if (poisoned.has(n)) value = r.pick(v.poison);
    else if (r.chance(0.75) || v.valid.length === 0) value = v.valid.length ? r.pick(v.valid) : MISSING;
    else value = r.chance(0.03) ? (r.chance(0.5) ? long(r.range(5000, 2 * MB)) : deep(r.range(1000, 50000))) : r.pick(HOSTILE);
    if (value === MISSING) {
      described.push(`${n}${poisoned.has(n) ? '!' : ''}=<missing>`);
      continue;
    }
    fields.push(`${JSON.stringify(n)}:${value}`);
    described.push(`${n}${poisoned.has(n) ? '!' : ''}=${value.length > 40 ? `${value.slice(0, 20)}...(${value.length})` : value}`);
  }
  if (r.chance(0.1)) fields.push(r.pick(['"__proto__":{"name":"thin","diskId":1}', '"constructor":{"prototype":{"polluted":1}}', '"extra":[1,2,3]']));
  const unregistered = peer === 'cliA' || peer === 'cliB' || peer === 'lone' || peer === 'nohost';
  const fromAgent = peer !== 'cliA' && peer !== 'cliB';
  const expect: Expect = spec.agent && unregistered ? 'refuse'
    : !spec.agent && !spec.anyone && fromAgent ? 'refuse' // a cli request from an agent: EPERM
    : spec.mode !== 'read' || poisoned.size > 0 ? 'refuse' : 'any';
  return { kind: 'req', name: `${op}(${described.join(', ')}) from ${peer}`, peer, op, args: `{${fields.join(',')}}`, payload, expect, frames: 1 };
}

const AGENT_PEERS: PeerName[] = ['agentA', 'agentB', 'agentA', 'agentB', 'lone', 'nohost', 'cliA'];
const ANY_PEERS: PeerName[] = ['cliA', 'cliA', 'cliB', 'agentA', 'agentB', 'lone', 'nohost'];

function randomRequest(r: Rng): ReqCase {
  if (r.chance(0.12)) return requestCase(r, r.pick(UNKNOWN_OPS), r.pick(ANY_PEERS));
  const spec = r.pick(SPECS);
  let peer = r.pick(spec.from ?? (spec.agent ? AGENT_PEERS : ANY_PEERS));
  if (spec.op === 'agent.register' && peer === 'lone') peer = 'agentA'; // lone must stay unregistered
  return requestCase(r, spec.op, peer);
}

/** Fixed cases first, whatever the seed: every operation from every kind of peer, wrong orders, known pitfalls. */
function corpus(r: Rng): ReqCase[] {
  const out: ReqCase[] = [];
  const peers: PeerName[] = ['cliA', 'agentA', 'lone', 'nohost'];
  for (const s of SPECS) for (const p of s.from ?? peers) if (!(s.op === 'agent.register' && p === 'lone')) out.push(requestCase(r, s.op, p, true));
  for (const op of UNKNOWN_OPS) out.push(requestCase(r, op, r.pick(ANY_PEERS)));
  const fixed = (name: string, peer: PeerName, op: string, args: Record<string, unknown>): ReqCase =>
    ({ kind: 'req', name, peer, op, args: JSON.stringify(args), expect: 'refuse', frames: 1 });
  // Agent requests with valid arguments from connections that may not send them: refused, nothing allocated.
  for (const peer of ['lone', 'cliA', 'nohost'] as const) {
    out.push(fixed(`a thin write fault from ${peer}`, peer, 'fault', { diskId: thin.id, op: FAULT_WRITE, segment: 5, states: STATE_ZERO, offset: 0, length: 4096 }));
    out.push(fixed(`an I/O error report from ${peer}`, peer, 'disk.ioerror', { diskId: thick.id, first: 0, count: 4 }));
  }
  out.push(fixed('agent.ping before agent.register', 'lone', 'agent.ping', {}));
  // A refused container add leaves an existing file as it was: a taken or bad name with a size that would grow it.
  for (const name of ['c1', 'bad name', '-x']) out.push(fixed(`container.add ${name} over the sentinel, grown`, 'cliA', 'container.add', { name, path: sentinel, size: 4 * MB }));
  out.push(fixed('container.add c1 at a fresh path', 'cliA', 'container.add', { name: 'c1', path: path.join(scratch, 'fresh-taken.img'), size: MB }));
  // A size the file system refuses, for a file the add creates: the empty file goes too.
  if (hugeRefused) out.push(fixed('container.add of a 2^53-1 byte file', 'cliA', 'container.add', { name: 'fz-huge', path: path.join(scratch, 'huge.img'), size: Number.MAX_SAFE_INTEGER }));
  return out;
}

const rawGenerators: Array<(r: Rng) => Omit<RawCase, 'kind'>> = [
  (r) => ({ name: 'random bytes', hello: r.chance(0.5) ? jsonFrame(helloText('cli')) : undefined, parts: [r.bytes(r.range(1, 300))], frames: 1 }),
  (r) => {
    const full = r.pick([jsonFrame(helloText('agent', 'fz-raw')), jsonFrame(reqText(1, 'disk.ls')), binFrame(reqText(1, 'disk.info', '{"name":"thin"}'), r.bytes(100))]);
    const isHello = full[5] === 0x7b && full.includes('"hello"');
    return { name: 'truncated frame', hello: isHello ? undefined : jsonFrame(helloText('cli')), parts: [full.subarray(0, r.range(1, full.length - 1))], frames: 1 };
  },
  (r) => {
    const len = r.pick([MAX_FRAME + 1, 0xffffffff, 0x80000000, 2 * MAX_FRAME, r.range(MAX_FRAME + 1, 0xffffffff)]);
    const p = Buffer.alloc(4);
    p.writeUInt32LE(len >>> 0, 0);
    return { name: `length prefix ${len}`, hello: r.chance(0.5) ? jsonFrame(helloText('cli')) : undefined, parts: [Buffer.concat([p, r.bytes(r.int(64))])], frames: 1 };
  },
  (r) => {
    const p = Buffer.alloc(4);
    p.writeUInt32LE(r.pick([0, MAX_FRAME, MAX_FRAME - 1]), 0);
    return { name: `length prefix ${p.readUInt32LE(0)}, then little`, hello: r.chance(0.5) ? jsonFrame(helloText('cli')) : undefined, parts: [Buffer.concat([p, r.bytes(r.int(16))])], frames: 1 };
  },
  (r) => {
    const type = r.pick([0, 3, 4, 127, 255, r.range(3, 255)]);
    return { name: `type byte ${type}`, hello: r.chance(0.5) ? jsonFrame(helloText('cli')) : undefined, parts: [frameOf(type, Buffer.from(r.chance(0.5) ? helloText('cli') : reqText(1, 'disk.ls')))], frames: 1 };
  },
  (r) => {
    const header = r.pick([reqText(7, 'disk.info', '{"name":"thin"}'), reqText(7, 'controller.status'), helloText('cli'), '{"type":"welcome","version":1,"serverId":"x"}',
      '{"type":"error","code":"E","message":"m"}', '{"type":"event","name":"x"}', '{"type":"res","id":99,"ok":true}', '{"type":', '', '[]']);
    const payload = r.bytes(r.int(512));
    const how = r.int(4);
    const len = how === 0 ? Buffer.byteLength(header) + r.range(1, 1000) : how === 1 ? 0xffffffff : Buffer.byteLength(header);
    const short = frameOf(2, r.bytes(r.int(4)));
    return {
      name: how === 3 ? 'binary frame too short' : `binary frame ${how === 2 ? 'with header' : 'whose header length runs past the body'}: ${header.slice(0, 30)}`,
      hello: jsonFrame(helloText(r.pick(['cli', 'agent']), 'fz-bin')), parts: [how === 3 ? short : binFrame(header, payload, len)], frames: 1,
    };
  },
  (r) => {
    const text = r.pick(['{"type":', '{"a":1,}', "{'type':'hello'}", '', ' ', 'NaN', '{"type":"req","id":1,"op":"disk.ls","args":{}} x', '{"type":"hello"', '\ufeff{"type":"event","name":"bom"}',
      '{"type":"req","id":1,"op":"disk.ls","args":{}}\u0000', '{"a":"\\x"}', '{"a":"\\ud800"}', '{"type":"hello","version":1,"role":"cli",}']);
    return { name: `invalid JSON ${JSON.stringify(text).slice(0, 40)}`, hello: r.chance(0.7) ? jsonFrame(helloText('cli')) : undefined, parts: [jsonFrame(text)], frames: 1 };
  },
  (r) => {
    const bytes = r.pick([[0xff], [0x7b, 0xff, 0x7d], [0xc3, 0x28], [0xc0, 0xaf], [0xed, 0xa0, 0x80], [0xf4, 0x90, 0x80, 0x80], [0x22, 0xe2, 0x82]]);
    return { name: `invalid UTF-8 ${Buffer.from(bytes).toString('hex')}`, hello: r.chance(0.7) ? jsonFrame(helloText('cli')) : undefined, parts: [jsonFrame(Buffer.from(bytes))], frames: 1 };
  },
  (r) => {
    // A valid request text with one byte changed, dropped or doubled: valid or not, the model knows.
    const b = Buffer.from(reqText(r.range(1, 1000), r.pick(['disk.ls', 'disk.info', 'fault', 'check']), '{"name":"thin","diskId":1,"segment":2}'));
    const i = r.int(b.length);
    const how = r.int(3);
    const m = how === 0 ? Buffer.concat([b.subarray(0, i), Buffer.from([r.int(256)]), b.subarray(i + 1)])
      : how === 1 ? Buffer.concat([b.subarray(0, i), b.subarray(i + 1)]) : Buffer.concat([b.subarray(0, i + 1), b.subarray(i)]);
    return { name: `mutated request ${JSON.stringify(m.toString('latin1')).slice(0, 60)}`, hello: jsonFrame(helloText('cli')), parts: [jsonFrame(m)], frames: 1 };
  },
  (r) => {
    const text = r.pick([
      '[]', '[1,2]', '1', '-0', '"x"', 'null', 'true', '{}', '{"type":5}', '{"type":"REQ"}', '{"type":"req"}', '{"type":"req","id":1,"op":"disk.ls"}',
      '{"type":"req","id":0,"op":"disk.ls","args":{}}', '{"type":"req","id":-1,"op":"disk.ls","args":{}}', '{"type":"req","id":1.5,"op":"disk.ls","args":{}}',
      '{"type":"req","id":"1","op":"disk.ls","args":{}}', '{"type":"req","id":9007199254740992,"op":"disk.ls","args":{}}', '{"type":"req","id":1,"op":"","args":{}}',
      '{"type":"req","id":1,"op":"__proto__","args":{}}', '{"type":"req","id":1,"op":"Disk.ls","args":{}}', `{"type":"req","id":1,"op":"a${'b'.repeat(64)}","args":{}}`,
      '{"type":"req","id":1,"op":5,"args":{}}', '{"type":"req","id":1,"op":"disk.ls","args":[]}', '{"type":"req","id":1,"op":"disk.ls","args":null}',
      '{"type":"req","id":1,"op":"disk.ls","args":"x"}', '{"__proto__":{"type":"hello","version":1,"role":"cli"}}', '{"type":"res","id":1}', '{"type":"res","id":1,"ok":false}',
      '{"type":"res","id":1,"ok":false,"error":{"code":"","message":"m"}}', '{"type":"event"}', '{"type":"event","name":""}', '{"type":"error","code":5}',
      `{"type":${long(r.range(1000, MB))}}`, `{"type":"req","id":1,"op":"disk.info","args":{"name":${deep(r.range(1000, 100000))}}}`, `{"a":${deep(r.range(1000, 100000))}}`,
      `{"type":"event","name":"x","data":${deep(r.range(1000, 100000))}}`, `{"type":"req","id":2,"op":"disk.info","args":{"name":${long(r.range(5000, 4 * MB))}}}`,
    ]);
    return { name: `JSON of the wrong shape ${text.slice(0, 60)}`, hello: r.chance(0.8) ? jsonFrame(helloText(r.pick(['cli', 'agent']), 'fz-shape')) : undefined, parts: [jsonFrame(text)], frames: 1 };
  },
  (r) => {
    const hello = r.pick([
      '{"type":"hello","version":1,"role":"admin"}', '{"type":"hello","version":1,"role":"AGENT"}', '{"type":"hello","version":1,"role":5}', '{"type":"hello","version":1}',
      '{"type":"hello","version":1,"role":null}', '{"type":"hello","role":"cli"}', '{"type":"hello","version":0,"role":"cli"}', '{"type":"hello","version":2,"role":"cli"}',
      '{"type":"hello","version":-1,"role":"cli"}', '{"type":"hello","version":1.5,"role":"cli"}', '{"type":"hello","version":"1","role":"cli"}',
      '{"type":"hello","version":9007199254740992,"role":"cli"}', '{"type":"hello","version":4294967297,"role":"agent","hostId":"h"}', '{"type":"hello","version":1,"role":"agent","hostId":5}',
      '{"type":"hello","version":1,"role":"agent","hostId":""}', `{"type":"hello","version":1,"role":"agent","hostId":${long(256)}}`, '{"type":"hello","version":1,"role":"agent","hostId":null}',
      '{"type":"hello","version":1,"role":"cli","extra":{"__proto__":{"x":1}}}', '{"type":"hello","version":1,"role":"cli","hostId":"a-cli-with-a-host"}', '{"type":"hello","version":1,"role":"agent"}',
      '{"type":"HELLO","version":1,"role":"cli"}', '{"version":1,"role":"cli"}', reqText(1, 'controller.status'), '{"type":"welcome","version":1,"serverId":"s"}',
      '{"type":"error","code":"EX","message":"m"}', '{"type":"event","name":"x"}', '{"type":"res","id":1,"ok":true}',
    ]);
    const parts = [jsonFrame(hello)];
    if (r.chance(0.3)) parts.push(jsonFrame(reqText(3, 'disk.ls')));
    return { name: `first message ${hello.slice(0, 70)}`, parts, frames: parts.length };
  },
  (r) => {
    const text = r.pick([helloText('cli'), helloText('agent', 'x'), '{"type":"welcome","version":1,"serverId":"s"}', '{"type":"error","code":"EX","message":"bye"}',
      '{"type":"res","id":424242,"ok":true,"result":1}', '{"type":"res","id":1,"ok":false,"error":{"code":"E","message":"m"}}', '{"type":"event","name":"migrate.progress","data":{}}']);
    const parts = [r.chance(0.3) ? binFrame(text, r.bytes(64)) : jsonFrame(text)];
    if (r.chance(0.5)) parts.push(jsonFrame(reqText(5, 'controller.status')));
    return { name: `after the handshake: ${text.slice(0, 50)}`, hello: jsonFrame(helloText(r.pick(['cli', 'agent']), 'fz-after')), parts, frames: parts.length };
  },
  (r) => {
    // Pipelined requests (duplicate ids too), some of them bad, in one write or byte by byte.
    const frames = Array.from({ length: r.range(2, 6) }, () => {
      let c = randomRequest(r);
      while (specOf.get(c.op)?.from) c = randomRequest(r); // these go on a cli connection: never controller.stop
      const spec = specOf.get(c.op);
      return spec && spec.mode !== 'read' ? jsonFrame(reqText(r.range(1, 3), c.op, '{}')) : jsonFrame(reqText(r.range(1, 3), c.op, c.args));
    });
    const all = Buffer.concat(frames);
    const parts = r.chance(0.3) ? Array.from(all.subarray(0, Math.min(all.length, 400)), (x) => Buffer.from([x])).concat(all.length > 400 ? [all.subarray(400)] : []) : [all];
    return { name: `${frames.length} pipelined requests`, hello: jsonFrame(helloText('cli')), parts, frames: frames.length };
  },
];

/** The run's cases, in order, until they add up to FRAMES frames. */
function generate(r: Rng): Case[] {
  const cases: Case[] = [];
  let frames = 0;
  const add = (c: Case): void => {
    cases.push(c);
    frames += c.frames + (c.kind === 'raw' && c.hello ? 1 : 0);
  };
  for (const c of corpus(r)) add(c);
  while (frames < FRAMES) {
    if (r.chance(0.5)) add(randomRequest(r));
    else {
      const g = r.pick(rawGenerators)(r);
      add({ kind: 'raw', ...g, answer: true });
    }
  }
  return cases;
}

// ---- running the cases

const failures: string[] = [];
const tally = { frames: 0, connections: 0, errorFrames: 0, closed: 0, answered: 0, refused: 0, ok: 0, monitor: 0 };
const fail = (i: number, c: Case, why: string): void => {
  failures.push(`case ${i} (${c.name.slice(0, 300)}): ${why}`);
};

async function welcomed(p: Peer, hello: Buffer): Promise<void> {
  p.write(hello);
  if (!await p.until(() => p.welcomed || p.closed, WAIT_MS)) throw new Error('no welcome');
  if (!p.welcomed) throw new Error(`refused: ${p.errorFrame?.message ?? 'closed'}`);
}

async function runRaw(i: number, c: RawCase): Promise<void> {
  const p = new Peer(c.answer);
  tally.connections++;
  try {
    if (!await p.connected) return fail(i, c, 'cannot connect to the controller');
    if (c.hello) {
      // Every generator's hello is a valid one: the hostile part is what follows.
      p.write(c.hello);
      tally.frames++;
      if (!await p.until(() => p.welcomed || p.closed, WAIT_MS)) return fail(i, c, 'the controller neither welcomed nor closed');
      if (!p.welcomed) return fail(i, c, `a valid hello was refused: ${p.errorFrame?.message ?? 'closed'}`);
    }
    const verdict = judge(Buffer.concat(c.parts), c.hello !== undefined);
    for (const b of c.parts) p.write(b);
    tally.frames += c.frames;
    const bytes = c.parts.reduce((n, b) => n + b.length, 0);
    // A truncated frame: the controller waits for the rest, and must close once this side has.
    if (verdict.end === 'eof') p.socket.end();
    switch (verdict.end) {
      case 'eof': case 'closed': case 'error': case 'error-or-closed': {
        if (!await p.until(() => p.closed, WAIT_MS)) return fail(i, c, `the controller neither answered nor closed (expected ${verdict.end})`);
        if (p.errorFrame) {
          tally.errorFrames++;
          if (verdict.end === 'eof' || verdict.end === 'closed') fail(i, c, `unexpected error frame ${p.errorFrame.code}: ${p.errorFrame.message}`);
          else if (!verdict.codes.includes(p.errorFrame.code)) fail(i, c, `error ${p.errorFrame.code} (${p.errorFrame.message}), expected ${verdict.codes.join(' or ')}`);
        } else {
          tally.closed++;
          // One small write is read whole before the controller closes, so its error frame must be there. (After
          // a second write the close can come first: that write fails with EPIPE, and what came back is unread.)
          if (verdict.end === 'error' && c.parts.length === 1 && bytes <= 16384) fail(i, c, `closed without an error frame (expected ${verdict.codes.join(' or ')})`);
        }
        break;
      }
      case 'open': {
        p.write(jsonFrame(reqText(PROBE_ID, 'controller.status')));
        const want = [...new Set([...verdict.reqs, PROBE_ID])];
        if (!await p.until(() => want.every((id) => p.responses.has(id)) || p.closed, WAIT_MS)) {
          return fail(i, c, `the controller neither answered nor closed (waiting for ${want.filter((id) => !p.responses.has(id)).join(', ')})`);
        }
        if (!want.every((id) => p.responses.has(id))) return fail(i, c, `closed the connection (${p.errorFrame?.message ?? 'no error frame'}) where it had to answer`);
        if (!p.responses.get(PROBE_ID)?.ok) fail(i, c, 'the probe was refused');
        tally.answered++;
        break;
      }
    }
    if (p.garbage) fail(i, c, `the controller sent something undecodable: ${p.garbage}`);
  } finally {
    p.destroy();
  }
}

interface LongPeer { peer: Peer; nextId: number }
const peers = new Map<PeerName, LongPeer>();

async function openPeers(): Promise<void> {
  const mk = async (name: PeerName, hello: string, register: boolean): Promise<void> => {
    const peer = new Peer(true);
    if (!await peer.connected) throw new Error(`${name} cannot connect`);
    await welcomed(peer, jsonFrame(hello));
    const lp = { peer, nextId: 1 };
    peers.set(name, lp);
    if (register) {
      const id = lp.nextId++;
      peer.write(jsonFrame(reqText(id, 'agent.register', JSON.stringify({ pid: process.pid, leaseMs: 60000, disks: [] }))));
      if (!await peer.until(() => peer.responses.has(id), WAIT_MS) || !peer.responses.get(id)?.ok) throw new Error(`${name} cannot register`);
    }
  };
  await mk('cliA', helloText('cli'), false);
  await mk('cliB', helloText('cli'), false);
  await mk('agentA', helloText('agent', 'fz-a'), true);
  await mk('agentB', helloText('agent', 'fz-b'), true);
  await mk('lone', helloText('agent', 'fz-lone'), false);
  await mk('nohost', helloText('agent'), false);
}

async function runReq(i: number, c: ReqCase): Promise<void> {
  const lp = peers.get(c.peer)!;
  const p = lp.peer;
  if (p.closed) return fail(i, c, `${c.peer}'s connection is closed (${p.errorFrame?.message ?? 'no error frame'})`);
  const id = lp.nextId++;
  const text = reqText(id, c.op, c.args);
  p.write(c.payload ? binFrame(text, c.payload) : jsonFrame(text));
  tally.frames++;
  if (!await p.until(() => p.responses.has(id) || p.closed, WAIT_MS)) return fail(i, c, 'the controller neither answered nor closed');
  const res = p.responses.get(id);
  if (!res) return fail(i, c, `the controller closed a well-formed connection (${p.errorFrame?.code ?? ''} ${p.errorFrame?.message ?? 'no error frame'})`);
  if (res.ok) tally.ok++;
  else tally.refused++;
  if (c.expect === 'refuse' && res.ok) fail(i, c, `must be refused, was answered ${JSON.stringify(res.result)?.slice(0, 200)}`);
  if (c.expect === 'unknown' && (res.ok || res.error.code !== 'EUNKNOWNOP')) {
    fail(i, c, `must be an unknown operation, was answered ${res.ok ? `ok ${JSON.stringify(res.result)?.slice(0, 200)}` : `${res.error.code} ${res.error.message.slice(0, 200)}`}`);
  }
}

/** Connections that say nothing, or half a hello: the handshake timeout must close them. */
function silent(): Array<Promise<string | undefined>> {
  return [Buffer.alloc(0), jsonFrame(helloText('cli')).subarray(0, 12)].map(async (b) => {
    const p = new Peer();
    tally.connections++;
    await p.connected;
    p.write(b);
    const closed = await p.until(() => p.closed, HANDSHAKE_TIMEOUT_MS + WAIT_MS);
    p.destroy();
    return closed ? undefined : `a connection that sent ${b.length} bytes and no hello was not closed`;
  });
}

t.test('the fuzz list covers every operation the controller handles', async (t) => {
  const ops = handledOps();
  t.ok(ops.length > 20, `found the handlers in controller.ts (${ops.length})`);
  t.same(SPECS.map((s) => s.op).sort(), ops);
});

t.test(`${FRAMES} hostile frames: every connection is answered or closed, and the controller keeps serving`, async (t) => {
  const r = new Rng(SEED);
  const cases = generate(r);
  await openPeers();
  const quiet = silent();
  const t0 = Date.now();
  let next = 0;
  while (next < cases.length) {
    // A batch of about 100 frames, JOBS connections at a time; then the well-behaved connection must be answered.
    const batch: Array<[number, Case]> = [];
    let frames = 0;
    while (next < cases.length && frames < 100) {
      const c = cases[next];
      batch.push([next++, c]);
      frames += c.frames + (c.kind === 'raw' && c.hello ? 1 : 0);
    }
    await Promise.all(Array.from({ length: JOBS }, async () => {
      for (let e = batch.shift(); e; e = batch.shift()) {
        const [i, c] = e;
        if (c.kind === 'raw') await runRaw(i, c);
        else await runReq(i, c);
      }
    }));
    const status = await monitor.request('controller.status', {}, { timeoutMs: WAIT_MS }).then((x) => x.result as { pid: number }, (err: Error) => err);
    tally.monitor++;
    if (status instanceof Error) {
      t.fail(`after ${tally.frames} frames the well-behaved connection got no answer: ${status.message}`);
      break;
    }
    t.equal(status.pid, pid, `after ${tally.frames} frames the well-behaved connection is answered`);
  }
  const seconds = (Date.now() - t0) / 1000;
  for (const why of await Promise.all(quiet)) if (why) failures.push(why);
  for (const lp of peers.values()) {
    if (lp.peer.garbage) failures.push(`a long-lived connection got something undecodable: ${lp.peer.garbage}`);
    lp.peer.destroy();
  }
  t.same(failures.slice(0, 25), [], `no failures (${failures.length}; seed ${SEED})`);
  t.ok(tally.frames >= FRAMES, `sent ${tally.frames} frames`);
  t.comment(`fuzz figures: seed ${SEED}, ${tally.frames} frames in ${seconds.toFixed(1)} s over ${tally.connections + peers.size} connections; ` +
    `raw connections: ${tally.errorFrames} answered with an error frame, ${tally.closed} closed, ${tally.answered} answered and still open; ` +
    `requests: ${tally.refused} refused, ${tally.ok} answered ok; ${tally.monitor} checks of the well-behaved connection`);
});

t.test('afterwards: the process lives, check is clean, nothing changed or leaked, the database is whole', async (t) => {
  t.doesNotThrow(() => process.kill(pid, 0), 'the controller process is alive');
  t.equal((await ask<{ pid: number }>('controller.status')).pid, pid, 'and it is the same process');
  const check = await ask<{ ok: boolean; problems: string[] }>('check');
  t.same(check.problems, [], 'vdisk check finds no problem');
  t.equal(check.ok, true);
  t.same(await shape(), before, 'the same containers (same usage: nothing allocated) and the same disks, of the same sizes');
  t.same(await ask('attachment.ls'), [], 'no attachment left by a refused attach');
  t.same(listing(), scratchBefore, 'no file made by a refused request');
  t.equal(digest(sentinel), sentinelBefore, 'the file a refused container.add named is untouched');
  await monitor.close();
  t.equal((await runCli(['controller', 'stop'], data)).status, 0, 'the controller stops');
  stopped = true;
  const db = new sqlite3.Database(path.join(data, 'vdisk.db'), sqlite3.OPEN_READONLY);
  const rows = await new Promise<unknown[]>((resolve, reject) => db.all('PRAGMA integrity_check', (err, r) => (err ? reject(err) : resolve(r))));
  await new Promise<void>((resolve) => db.close(() => resolve()));
  t.same(rows, [{ integrity_check: 'ok' }], 'PRAGMA integrity_check: ok');
});
