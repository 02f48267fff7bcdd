// Protocol framing and message validation: round trips, chunking, and every class of malformed input.
import t from 'tap';
import { encodeBinary, encodeJson, FrameDecoder, MAX_FRAME, type Frame } from '../../src/protocol/frame.js';
import { messageOfFrame, parseMessage } from '../../src/protocol/messages.js';

const EPROTO = { code: 'EPROTO', name: 'VdiskError' };

function frame(type: number, body: Buffer | string): Buffer {
  const b = typeof body === 'string' ? Buffer.from(body) : body;
  const out = Buffer.alloc(5 + b.length);
  out.writeUInt32LE(1 + b.length, 0);
  out[4] = type;
  b.copy(out, 5);
  return out;
}

function binaryBody(headerLen: number, header: string, payload = Buffer.alloc(0)): Buffer {
  const h = Buffer.alloc(4);
  h.writeUInt32LE(headerLen, 0);
  return frame(2, Buffer.concat([h, Buffer.from(header), payload]));
}

t.test('JSON and binary frames round trip', async (t) => {
  const d = new FrameDecoder();
  t.same(d.push(encodeJson({ type: 'event', name: 'x', data: { é: [1, null] } })),
    [{ kind: 'json', msg: { type: 'event', name: 'x', data: { é: [1, null] } } }]);
  const empty = d.push(Buffer.concat(encodeBinary({ type: 'res', id: 1, ok: true }, new Uint8Array(0))));
  t.same(empty, [{ kind: 'binary', header: { type: 'res', id: 1, ok: true }, payload: Buffer.alloc(0) }]);
  t.equal(d.pending, 0);
});

t.test('a 16 MiB payload survives 64 KiB chunks and is not copied on encode', async (t) => {
  const payload = new Uint8Array(16 << 20);
  for (let i = 0; i < payload.length; i += 4093) payload[i] = i & 0xff;
  const [prefix, body] = encodeBinary({ type: 'res', id: 7, ok: true }, payload);
  t.equal(body.buffer, payload.buffer, 'payload is a view, not a copy');
  const wire = Buffer.concat([prefix, body]);
  const d = new FrameDecoder();
  const frames: Frame[] = [];
  for (let off = 0; off < wire.length; off += 65536) frames.push(...d.push(wire.subarray(off, off + 65536)));
  t.equal(frames.length, 1);
  const f = frames[0];
  if (f.kind !== 'binary') throw new Error('expected binary');
  t.same(f.header, { type: 'res', id: 7, ok: true });
  t.ok(Buffer.from(payload.buffer).equals(f.payload));
});

t.test('byte-by-byte delivery and many frames in one chunk', async (t) => {
  const wire = Buffer.concat([
    encodeJson({ type: 'req', id: 1, op: 'a', args: {} }),
    ...encodeBinary({ type: 'event', name: 'b' }, Buffer.from('xyz')),
    encodeJson({ type: 'req', id: 2, op: 'c', args: {} }),
  ]);
  const slow = new FrameDecoder();
  const got: Frame[] = [];
  for (let i = 0; i < wire.length; i++) got.push(...slow.push(wire.subarray(i, i + 1)));
  const fast = new FrameDecoder().push(wire);
  const odd = new FrameDecoder();
  const sevens: Frame[] = [];
  for (let i = 0; i < wire.length; i += 7) sevens.push(...odd.push(wire.subarray(i, i + 7)));
  t.same(sevens, fast, 'chunks that end mid-frame');
  t.equal(fast.length, 3);
  t.same(got, fast);
  t.same((fast[1] as { payload: Buffer }).payload.toString(), 'xyz');
  const many = Buffer.concat(Array.from({ length: 1000 }, (_, i) => encodeJson({ type: 'event', name: `n${i}` })));
  t.equal(new FrameDecoder().push(many).length, 1000);
});

t.test('each framing violation throws EPROTO and the decoder stays broken', async (t) => {
  const cases: Array<[string, Buffer]> = [
    ['zero length', Buffer.from([0, 0, 0, 0])],
    ['oversize', Buffer.from([0xff, 0xff, 0xff, 0xff])],
    ['unknown type', frame(9, '{}')],
    ['invalid UTF-8', frame(1, Buffer.from([0x7b, 0xff, 0x7d]))],
    ['invalid JSON', frame(1, '{"a":')],
    ['JSON array', frame(1, '[1]')],
    ['JSON null', frame(1, 'null')],
    ['JSON string', frame(1, '"hi"')],
    ['binary too short', frame(2, Buffer.from([1, 0]))],
    ['binary header beyond body', binaryBody(100, '{}')],
    ['binary header not an object', binaryBody(2, '[]')],
  ];
  for (const [name, bytes] of cases) {
    const d = new FrameDecoder();
    t.throws(() => d.push(bytes), EPROTO, name);
    t.throws(() => d.push(encodeJson({ type: 'event', name: 'x' })), EPROTO, `${name}: stays broken`);
  }
  const small = new FrameDecoder(100);
  t.throws(() => small.push(encodeJson({ pad: 'x'.repeat(200) })), EPROTO, 'custom limit');
  t.doesNotThrow(() => new FrameDecoder().push(Buffer.from([0, 0, 0, 4])), 'exactly MAX_FRAME waits for more');
  const max = Buffer.alloc(4);
  max.writeUInt32LE(MAX_FRAME + 1, 0);
  t.throws(() => new FrameDecoder().push(max), EPROTO, 'MAX_FRAME + 1');
});

t.test('encoders refuse what no decoder would accept', async (t) => {
  t.throws(() => encodeJson([] as unknown as object), { code: 'EINVAL' });
  t.throws(() => encodeBinary({ type: 'res' }, { byteLength: MAX_FRAME, buffer: new ArrayBuffer(8), byteOffset: 0 } as Uint8Array),
    { code: 'EMSGSIZE' });
});

t.test('parseMessage accepts each valid shape', async (t) => {
  const valid: Array<Record<string, unknown>> = [
    { type: 'hello', version: 1, role: 'agent', hostId: 'h1' },
    { type: 'hello', version: 7, role: 'cli' },
    { type: 'welcome', version: 1, serverId: 's' },
    { type: 'error', code: 'EVERSION', message: 'no' },
    { type: 'req', id: 1, op: 'table.load', args: { a: 1 } },
    { type: 'req', id: Number.MAX_SAFE_INTEGER, op: 'x', args: {} },
    { type: 'res', id: 3, ok: true, result: [1] },
    { type: 'res', id: 3, ok: true },
    { type: 'res', id: 3, ok: false, error: { code: 'ENOENT', message: 'gone' } },
    { type: 'event', name: 'fault', data: { seg: 1 } },
    { type: 'event', name: 'tick' },
  ];
  for (const m of valid) t.same(parseMessage(m), m, JSON.stringify(m));
  t.same(parseMessage({ type: 'event', name: 'x', extra: 1 }), { type: 'event', name: 'x' }, 'unknown fields dropped');
});

t.test('parseMessage names the wrong field', async (t) => {
  const invalid: Array<[Record<string, unknown>, RegExp]> = [
    [{}, /unknown message type undefined/],
    [{ type: 'nope' }, /unknown message type "nope"/],
    [{ type: 'hello', role: 'cli' }, /"version" must be/],
    [{ type: 'hello', version: 1.5, role: 'cli' }, /"version"/],
    [{ type: 'hello', version: 1, role: 'root' }, /"role"/],
    [{ type: 'hello', version: 1, role: 'agent', hostId: 5 }, /"hostId" must be a string/],
    [{ type: 'hello', version: 1, role: 'agent', hostId: '' }, /"hostId" must be 1\.\.255/],
    [{ type: 'welcome', version: 1 }, /"serverId" is missing/],
    [{ type: 'error', message: 'm' }, /"code"/],
    [{ type: 'error', code: 'E', message: 1 }, /"message"/],
    [{ type: 'req', id: 0, op: 'a', args: {} }, /"id" must be a positive safe integer/],
    [{ type: 'req', id: '1', op: 'a', args: {} }, /"id"/],
    [{ type: 'req', id: 2 ** 53, op: 'a', args: {} }, /"id"/],
    [{ type: 'req', id: 1, op: 'Bad', args: {} }, /"op" must match/],
    [{ type: 'req', id: 1, op: 'a-b', args: {} }, /"op" must match/],
    [{ type: 'req', id: 1, op: 'a'.repeat(65), args: {} }, /"op" must be 1\.\.64/],
    [{ type: 'req', id: 1, op: 'a', args: [] }, /"args" must be an object/],
    [{ type: 'req', id: 1, op: 'a' }, /"args"/],
    [{ type: 'res', id: 1 }, /"ok" must be true or false/],
    [{ type: 'res', id: 1, ok: false }, /"error" must be an object/],
    [{ type: 'res', id: 1, ok: false, error: { message: 'm' } }, /"error\.code"/],
    [{ type: 'res', id: 1, ok: false, error: { code: 'E' } }, /"error\.message"/],
    [{ type: 'event' }, /"name" is missing/],
  ];
  for (const [m, re] of invalid) {
    t.throws(() => parseMessage(m), { code: 'EPROTO', message: re }, JSON.stringify(m));
  }
});

t.test('binary frames carry only requests, responses and events', async (t) => {
  const ok = messageOfFrame({ kind: 'binary', header: { type: 'event', name: 'x' }, payload: Buffer.from('p') });
  t.same(ok.msg, { type: 'event', name: 'x' });
  t.same(ok.payload, Buffer.from('p'));
  t.throws(() => messageOfFrame({ kind: 'binary', header: { type: 'hello', version: 1, role: 'cli' }, payload: Buffer.alloc(0) }),
    EPROTO);
});
