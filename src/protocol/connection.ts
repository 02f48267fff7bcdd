// One protocol connection over a stream socket, usable on either side: request/response matching by id,
// events, binary payloads, and the rule that a peer's protocol violation closes only this connection.
import type net from 'node:net';
import { VdiskError } from '../errors.js';
import { encodeBinary, encodeJson, FrameDecoder } from './frame.js';
import { messageOfFrame, parseMessage, type EventMessage, type Message, type RequestMessage } from './messages.js';
import { errorCode, errorText, unwrapReply, type HandlerReply } from './reply.js';

export type { HandlerReply } from './reply.js';

export interface RequestOptions {
  timeoutMs?: number;
  payload?: Uint8Array;
  /**
   * Runs synchronously when the ok reply is decoded, before any later frame of the connection is dispatched.
   * The agent installs fault answers here so that they and the controller's table commands take effect in
   * the order they travelled (a promise continuation would run after a command that followed in the same chunk).
   */
  onReply?: (r: Reply) => void;
}
export interface Reply { result: unknown; payload?: Buffer }
export type RequestHandler =
  (op: string, args: Record<string, unknown>, payload: Buffer | undefined) => Promise<HandlerReply | unknown>;
export type EventHandler = (name: string, data: unknown, payload: Buffer | undefined) => void | Promise<void>;

export const DEFAULT_REQUEST_TIMEOUT_MS = 30_000;
/** How long a closing connection waits for its last writes to drain before it is torn down regardless. */
const LINGER_MS = 1000;
/** Requests or events held for a handler not yet installed; beyond this, requests are refused, events dropped. */
export const MAX_HELD = 256;
/**
 * Bytes (frame bodies) of the events held for a handler not yet installed; beyond this, events are dropped
 * too. Without it a peer could park 256 events of 64 MiB each on a side that never listens for events.
 */
export const MAX_HELD_EVENT_BYTES = 1 << 20;

interface Pending { resolve(r: Reply): void; reject(e: Error): void; timer: NodeJS.Timeout | undefined; onReply?: (r: Reply) => void }
type Phase = 'handshake' | 'open' | 'closing' | 'closed';

export class Connection {
  readonly closed: Promise<void>;
  /** The error the peer reported before closing, if it sent one. */
  peerError: VdiskError | undefined;
  private phase: Phase = 'handshake';
  private readonly decoder = new FrameDecoder();
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private requestHandler: RequestHandler | undefined;
  private eventHandler: EventHandler | undefined;
  // What arrives before its handler is installed (the peer may speak first, right after the handshake)
  // waits here rather than being lost.
  private heldRequests: Array<[RequestMessage, Buffer | undefined]> = [];
  private heldEvents: Array<[EventMessage, Buffer | undefined]> = [];
  private heldEventBytes = 0;
  private first: { msg?: Message; waiter?: (m: Message | Error) => void } = {};
  private linger: NodeJS.Timeout | undefined;
  /**
   * The peer's requests this side serves at once; one more is refused at once with EBUSY (nothing of it is
   * kept). Unbounded unless the owner sets it: a peer that pipelines without waiting for answers would
   * otherwise have this side hold every request it sent, arguments and payload, until its handler finishes.
   */
  maxServing = Infinity;
  private serving = 0;

  constructor(readonly socket: net.Socket) {
    this.closed = new Promise((resolve) => socket.once('close', () => {
      this.teardown();
      resolve();
    }));
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    // 'close' always follows 'error'; the listener only keeps the error from being thrown.
    socket.on('error', () => undefined);
  }

  private get done(): boolean {
    return this.phase === 'closing' || this.phase === 'closed';
  }

  get isOpen(): boolean {
    return this.phase === 'open';
  }

  request(op: string, args: Record<string, unknown> = {}, opts: RequestOptions = {}): Promise<Reply> {
    if (this.phase !== 'open') return Promise.reject(this.closedError());
    const id = this.nextId++;
    const msg: RequestMessage = { type: 'req', id, op, args };
    let frames: Buffer[];
    try {
      parseMessage(msg as unknown as Record<string, unknown>);
      frames = opts.payload ? encodeBinary(msg, opts.payload) : [encodeJson(msg)];
    } catch (err) {
      // The peer would call a malformed request a protocol violation; locally it is a bad argument.
      const code = errorCode(err) === 'EPROTO' ? 'EINVAL' : errorCode(err);
      return Promise.reject(new VdiskError(`cannot send request ${op}: ${errorText(err)}`, { code, cause: err }));
    }
    const timeoutMs = opts.timeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS;
    return new Promise<Reply>((resolve, reject) => {
      // A reply after the timeout finds no entry and is dropped, like any reply with an unknown id.
      const timer = timeoutMs > 0 && Number.isFinite(timeoutMs)
        ? setTimeout(() => {
          this.pending.delete(id);
          reject(new VdiskError(`request ${op} timed out after ${timeoutMs} ms`, { code: 'ETIMEDOUT' }));
        }, timeoutMs)
        : undefined;
      this.pending.set(id, { resolve, reject, timer, onReply: opts.onReply });
      this.write(frames);
    });
  }

  /** Handles the peer's requests; a throw becomes an ok:false reply with the error's code (default EFAIL). */
  onRequest(handler: RequestHandler): void {
    this.requestHandler = handler;
    for (const [req, payload] of this.heldRequests.splice(0)) this.take(req, payload);
  }

  /** Handles the peer's events; a side that wants none installs one that drops them, so none is held. */
  onEvent(handler: EventHandler): void {
    this.eventHandler = handler;
    this.heldEventBytes = 0;
    for (const [event, payload] of this.heldEvents.splice(0)) void this.notify(event, payload);
  }

  /** What waits for a handler not installed yet, for tests and diagnostics. */
  get held(): { requests: number; events: number; eventBytes: number } {
    return { requests: this.heldRequests.length, events: this.heldEvents.length, eventBytes: this.heldEventBytes };
  }

  /** Fire-and-forget; silently dropped once the connection is no longer open. */
  sendEvent(name: string, data?: unknown, payload?: Uint8Array): void {
    const msg = data === undefined ? { type: 'event', name } : { type: 'event', name, data };
    parseMessage(msg);
    if (this.phase !== 'open') return;
    this.write(payload ? encodeBinary(msg, payload) : [encodeJson(msg)]);
  }

  /** Writes any message as JSON; the handshake and connection-level errors go through here. */
  send(msg: Message): void {
    this.write([encodeJson(msg)]);
  }

  /** The first message the peer sends (hello or welcome), for the handshake in server.ts and client.ts. */
  firstMessage(timeoutMs: number): Promise<Message> {
    if (this.first.msg) return Promise.resolve(this.first.msg);
    if (this.done) return Promise.reject(this.closedError());
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.first.waiter = undefined;
        reject(new VdiskError(`no handshake within ${timeoutMs} ms`, { code: 'ETIMEDOUT' }));
      }, timeoutMs);
      this.first.waiter = (m) => {
        clearTimeout(timer);
        this.first.waiter = undefined;
        if (m instanceof Error) reject(m);
        else resolve(m);
      };
    });
  }

  /** Sends a connection-level error (when the socket is still writable) and closes. */
  fail(code: string, message: string): void {
    if (this.done) return;
    this.shutdown(encodeJson({ type: 'error', code, message: message.slice(0, 4096) }));
  }

  close(): Promise<void> {
    this.shutdown(undefined);
    return this.closed;
  }

  private shutdown(last: Buffer | undefined): void {
    if (this.done) return;
    this.phase = 'closing';
    const s = this.socket;
    if (s.destroyed) return;
    // end() flushes what is queued (the error frame last) before the FIN; destroying on 'finish' and
    // after LINGER_MS means a peer that never reads or never closes cannot keep the connection alive.
    s.once('finish', () => s.destroy());
    this.linger = setTimeout(() => s.destroy(), LINGER_MS);
    this.linger.unref();
    if (!s.writable) s.destroy();
    else if (last) s.end(last);
    else s.end();
  }

  private write(frames: Buffer[]): void {
    const s = this.socket;
    if (s.destroyed || !s.writable) return;
    // Corked writes leave as one writev: the payload goes out from the caller's memory, uncopied.
    s.cork();
    for (const f of frames) s.write(f);
    s.uncork();
  }

  private onData(chunk: Buffer): void {
    if (this.done) return;
    try {
      for (const { frame, bytes } of this.decoder.pushSized(chunk)) {
        const { msg, payload } = messageOfFrame(frame);
        this.dispatch(msg, payload, bytes);
        if (this.done) return;
      }
    } catch (err) {
      this.fail(errorCode(err) === 'EPROTO' ? 'EPROTO' : 'EFAIL', errorText(err));
    }
  }

  private dispatch(msg: Message, payload: Buffer | undefined, bytes: number): void {
    if (this.phase === 'handshake') {
      // Whatever comes first is the handshake's to judge; later frames flow as on an open connection.
      this.phase = 'open';
      if (this.first.waiter) this.first.waiter(msg);
      else this.first.msg = msg;
      return;
    }
    switch (msg.type) {
      case 'res': {
        const p = this.pending.get(msg.id);
        if (!p) return;
        this.pending.delete(msg.id);
        clearTimeout(p.timer);
        if (msg.ok) {
          const reply = payload ? { result: msg.result, payload } : { result: msg.result };
          try {
            p.onReply?.(reply);
            p.resolve(reply);
          } catch (err) {
            p.reject(err as Error);
          }
        } else p.reject(new VdiskError(msg.error.message, { code: msg.error.code }));
        return;
      }
      case 'req':
        if (this.requestHandler) this.take(msg, payload);
        else if (this.heldRequests.length < MAX_HELD) this.heldRequests.push([msg, payload]);
        else this.reply(msg.id, { code: 'EUNKNOWNOP', message: 'no request handler is installed' });
        return;
      case 'event':
        if (this.eventHandler) void this.notify(msg, payload);
        else if (this.heldEvents.length < MAX_HELD && this.heldEventBytes + bytes <= MAX_HELD_EVENT_BYTES) {
          // A copy of the payload: a view would keep the whole chunk it arrived in.
          this.heldEvents.push([msg, payload && Buffer.from(payload)]);
          this.heldEventBytes += bytes;
        }
        return;
      case 'error':
        this.peerError = new VdiskError(`the peer closed the connection: ${msg.message}`, { code: msg.code });
        this.shutdown(undefined);
        return;
      default:
        throw new VdiskError(`protocol violation: unexpected ${msg.type} after the handshake`, { code: 'EPROTO' });
    }
  }

  /** Serves a request, or refuses it with EBUSY when maxServing are being served already. */
  private take(req: RequestMessage, payload: Buffer | undefined): void {
    if (this.serving < this.maxServing) return void this.serve(req, payload);
    this.reply(req.id, { code: 'EBUSY', message: `${this.serving} requests are in flight on this connection, the most it serves at once: wait for their answers` });
  }

  private async serve(req: RequestMessage, payload: Buffer | undefined): Promise<void> {
    let frames: Buffer[];
    this.serving++;
    try {
      const out = unwrapReply(await this.requestHandler?.(req.op, req.args, payload));
      const res = out.result === undefined
        ? { type: 'res', id: req.id, ok: true }
        : { type: 'res', id: req.id, ok: true, result: out.result };
      frames = out.payload ? encodeBinary(res, out.payload) : [encodeJson(res)];
    } catch (err) {
      // Also covers results that cannot be encoded (a BigInt, a cycle, an oversized frame).
      return this.reply(req.id, { code: errorCode(err), message: errorText(err) });
    } finally {
      this.serving--;
    }
    if (this.phase === 'open') this.write(frames);
  }

  private reply(id: number, error: { code: string; message: string }): void {
    if (this.phase === 'open') this.write([encodeJson({ type: 'res', id, ok: false, error })]);
  }

  private async notify(event: EventMessage, payload: Buffer | undefined): Promise<void> {
    try {
      await this.eventHandler?.(event.name, event.data, payload);
    } catch (err) {
      // An event has no reply to carry the failure, and it must not take the connection down.
      process.emitWarning(`vdisk: handler for event ${event.name} failed: ${errorText(err)}`);
    }
  }

  private closedError(): VdiskError {
    const why = this.peerError ? `: ${this.peerError.message} (${this.peerError.code})` : '';
    return new VdiskError(`connection closed${why}`, { code: 'ECONNRESET' });
  }

  private teardown(): void {
    this.phase = 'closed';
    clearTimeout(this.linger);
    const err = this.closedError();
    for (const p of this.pending.values()) {
      clearTimeout(p.timer);
      p.reject(err);
    }
    this.pending.clear();
    this.heldRequests = [];
    this.heldEvents = [];
    this.heldEventBytes = 0;
    this.first.waiter?.(err);
  }
}
