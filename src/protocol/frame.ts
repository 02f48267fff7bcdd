// Framing of the controller protocol: u32 LE body length, then a type byte and its payload (a JSON object,
// or a JSON header plus raw bytes). The decoder turns any malformed input into VdiskError('EPROTO').
import { VdiskError } from '../errors.js';

export const MAX_FRAME = 64 * 1024 * 1024;
export const FRAME_JSON = 1;
export const FRAME_BINARY = 2;

export type Frame =
  | { kind: 'json'; msg: Record<string, unknown> }
  | { kind: 'binary'; header: Record<string, unknown>; payload: Buffer };

export function isPlainObject(v: unknown): v is Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return false;
  const proto: unknown = Object.getPrototypeOf(v);
  return proto === Object.prototype || proto === null;
}

function violation(message: string): VdiskError {
  return new VdiskError(`protocol violation: ${message}`, { code: 'EPROTO' });
}

function jsonBytes(obj: object, what: string): Buffer {
  if (!isPlainObject(obj)) throw new VdiskError(`${what} must be a plain object`, { code: 'EINVAL' });
  return Buffer.from(JSON.stringify(obj), 'utf8');
}

// Refusing to send what the peer would reject keeps a local mistake from killing the connection.
function checkSize(body: number): void {
  if (body > MAX_FRAME) {
    throw new VdiskError(`message of ${body} bytes exceeds the ${MAX_FRAME}-byte frame limit`, { code: 'EMSGSIZE' });
  }
}

export function encodeJson(msg: object): Buffer {
  const json = jsonBytes(msg, 'a message');
  checkSize(1 + json.length);
  const out = Buffer.allocUnsafe(5 + json.length);
  out.writeUInt32LE(1 + json.length, 0);
  out[4] = FRAME_JSON;
  json.copy(out, 5);
  return out;
}

/** Returns [prefix, payload]; the payload is a view of the caller's bytes, so it must not change until written. */
export function encodeBinary(header: object, payload: Uint8Array): Buffer[] {
  const json = jsonBytes(header, 'a binary header');
  const body = 1 + 4 + json.length + payload.byteLength;
  checkSize(body);
  const prefix = Buffer.allocUnsafe(9 + json.length);
  prefix.writeUInt32LE(body, 0);
  prefix[4] = FRAME_BINARY;
  prefix.writeUInt32LE(json.length, 5);
  json.copy(prefix, 9);
  return [prefix, Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength)];
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

function parseObject(bytes: Buffer, what: string): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(utf8.decode(bytes));
  } catch (err) {
    throw violation(`${what} is not valid UTF-8 JSON (${(err as Error).message})`);
  }
  if (!isPlainObject(value)) throw violation(`${what} is not a JSON object`);
  return value;
}

export function decodeBody(body: Buffer): Frame {
  switch (body[0]) {
    case FRAME_JSON:
      return { kind: 'json', msg: parseObject(body.subarray(1), 'JSON frame') };
    case FRAME_BINARY: {
      if (body.length < 5) throw violation('binary frame too short for its header length');
      const headerLen = body.readUInt32LE(1);
      if (headerLen > body.length - 5) {
        throw violation(`binary header length ${headerLen} exceeds the ${body.length}-byte frame`);
      }
      const header = parseObject(body.subarray(5, 5 + headerLen), 'binary frame header');
      return { kind: 'binary', header, payload: body.subarray(5 + headerLen) };
    }
    default:
      throw violation(`unknown frame type ${body[0]}`);
  }
}

/**
 * Incremental decoder. Chunks are kept as a list and joined once per frame, so a 16 MiB frame arriving in
 * 64 KiB pieces is copied once rather than once per piece. After a throw the stream position is lost, so
 * the decoder refuses further input and the connection is expected to close.
 */
export class FrameDecoder {
  private chunks: Buffer[] = [];
  private buffered = 0;
  /** Body length of the frame being assembled, or -1 while the length prefix is still incomplete. */
  private need = -1;
  private broken: VdiskError | undefined;

  constructor(readonly maxFrame: number = MAX_FRAME) {}

  push(chunk: Buffer): Frame[] {
    return this.pushSized(chunk).map((f) => f.frame);
  }

  /** push(), with each frame's body length: what it cost on the wire, for a caller that budgets memory. */
  pushSized(chunk: Buffer): Array<{ frame: Frame; bytes: number }> {
    if (this.broken) throw this.broken;
    if (chunk.length > 0) {
      this.chunks.push(chunk);
      this.buffered += chunk.length;
    }
    const frames: Array<{ frame: Frame; bytes: number }> = [];
    try {
      while (true) {
        if (this.need < 0) {
          if (this.buffered < 4) break;
          const len = this.take(4).readUInt32LE(0);
          if (len === 0) throw violation('zero-length frame');
          if (len > this.maxFrame) throw violation(`frame of ${len} bytes exceeds the ${this.maxFrame}-byte limit`);
          this.need = len;
        }
        if (this.buffered < this.need) break;
        const body = this.take(this.need);
        this.need = -1;
        frames.push({ frame: decodeBody(body), bytes: body.length });
      }
    } catch (err) {
      this.broken = err instanceof VdiskError ? err : violation(String(err));
      this.chunks = [];
      this.buffered = 0;
      throw this.broken;
    }
    return frames;
  }

  /** Bytes held for a frame that has not completed yet (non-zero at EOF means a truncated frame). */
  get pending(): number {
    return this.buffered + (this.need >= 0 ? 4 : 0);
  }

  /** Removes exactly n buffered bytes (n <= buffered); copies only when they span chunks. */
  private take(n: number): Buffer {
    this.buffered -= n;
    const first = this.chunks[0];
    if (first.length > n) {
      this.chunks[0] = first.subarray(n);
      return first.subarray(0, n);
    }
    if (first.length === n) {
      this.chunks.shift();
      return first;
    }
    const parts: Buffer[] = [];
    let got = 0;
    let used = 0;
    while (got < n) {
      const c = this.chunks[used];
      const want = n - got;
      if (c.length <= want) {
        parts.push(c);
        got += c.length;
        used++;
      } else {
        parts.push(c.subarray(0, want));
        this.chunks[used] = c.subarray(want);
        got = n;
      }
    }
    this.chunks.splice(0, used);
    return Buffer.concat(parts, n);
  }
}
