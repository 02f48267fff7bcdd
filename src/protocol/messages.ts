// Message shapes of the controller protocol and their validation. parseMessage is the only way decoded JSON
// becomes a typed message, so a peer's bad field is reported as EPROTO naming that field.
import { VdiskError } from '../errors.js';
import { isPlainObject, type Frame } from './frame.js';

export const PROTOCOL_VERSION = 1;

export type Role = 'agent' | 'cli';
export interface RemoteError { code: string; message: string }

export interface Hello { type: 'hello'; version: number; role: Role; hostId?: string }
export interface Welcome { type: 'welcome'; version: number; serverId: string }
/** Connection-level error; the sender closes the connection after it. */
export interface ErrorMessage { type: 'error'; code: string; message: string }
export interface RequestMessage { type: 'req'; id: number; op: string; args: Record<string, unknown> }
export interface ResponseOk { type: 'res'; id: number; ok: true; result?: unknown }
export interface ResponseError { type: 'res'; id: number; ok: false; error: RemoteError }
export type ResponseMessage = ResponseOk | ResponseError;
export interface EventMessage { type: 'event'; name: string; data?: unknown }

export type Message = Hello | Welcome | ErrorMessage | RequestMessage | ResponseMessage | EventMessage;
/** The messages that may travel as the header of a binary frame. */
export type PayloadMessage = RequestMessage | ResponseMessage | EventMessage;

const OP = /^[a-z][a-zA-Z0-9.]{0,63}$/;
const MAX_NAME = 128;
const MAX_ID = 255;

function bad(type: string, field: string, why: string): never {
  throw new VdiskError(`protocol violation: ${type} message field "${field}" ${why}`, { code: 'EPROTO' });
}

function text(obj: Record<string, unknown>, type: string, field: string, max: number): string {
  const v = obj[field];
  if (typeof v !== 'string') bad(type, field, v === undefined ? 'is missing' : 'must be a string');
  if (v.length === 0 || v.length > max) bad(type, field, `must be 1..${max} characters`);
  return v;
}

function positiveId(obj: Record<string, unknown>, type: string): number {
  const v = obj.id;
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 1) bad(type, 'id', 'must be a positive safe integer');
  return v;
}

function version(obj: Record<string, unknown>, type: string): number {
  const v = obj.version;
  // Any integer is well-formed here: a version the server does not speak is EVERSION, not EPROTO.
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) bad(type, 'version', 'must be a non-negative integer');
  return v;
}

/** Reads {code, message} from `e`; `at` prefixes the field names in complaints ("error." or ""). */
function codeAndMessage(e: Record<string, unknown>, type: string, at: string): RemoteError {
  if (typeof e.code !== 'string' || e.code.length === 0 || e.code.length > MAX_NAME) {
    bad(type, `${at}code`, `must be a string of 1..${MAX_NAME} characters`);
  }
  if (typeof e.message !== 'string') bad(type, `${at}message`, 'must be a string');
  return { code: e.code, message: e.message };
}

/** Validates a decoded object; the result holds only the known fields (unknown extra fields are ignored). */
export function parseMessage(obj: Record<string, unknown>): Message {
  const type = obj.type;
  switch (type) {
    case 'hello': {
      const v = version(obj, type);
      if (obj.role !== 'agent' && obj.role !== 'cli') bad(type, 'role', 'must be "agent" or "cli"');
      const hello: Hello = { type, version: v, role: obj.role };
      if (obj.hostId !== undefined) hello.hostId = text(obj, type, 'hostId', MAX_ID);
      return hello;
    }
    case 'welcome':
      return { type, version: version(obj, type), serverId: text(obj, type, 'serverId', MAX_ID) };
    case 'error': {
      const { code, message } = codeAndMessage(obj, type, '');
      return { type, code, message };
    }
    case 'req': {
      const id = positiveId(obj, type);
      const op = text(obj, type, 'op', 64);
      if (!OP.test(op)) bad(type, 'op', 'must match [a-z][a-zA-Z0-9.]*');
      if (!isPlainObject(obj.args)) bad(type, 'args', 'must be an object');
      return { type, id, op, args: obj.args };
    }
    case 'res': {
      const id = positiveId(obj, type);
      if (obj.ok === true) return 'result' in obj ? { type, id, ok: true, result: obj.result } : { type, id, ok: true };
      if (obj.ok === false) {
        if (!isPlainObject(obj.error)) bad(type, 'error', 'must be an object');
        return { type, id, ok: false, error: codeAndMessage(obj.error, type, 'error.') };
      }
      return bad(type, 'ok', 'must be true or false');
    }
    case 'event': {
      const name = text(obj, type, 'name', MAX_NAME);
      return 'data' in obj ? { type, name, data: obj.data } : { type, name };
    }
    default:
      throw new VdiskError(
        `protocol violation: unknown message type ${typeof type === 'string' ? JSON.stringify(type) : typeof type}`,
        { code: 'EPROTO' },
      );
  }
}

/** The message a frame carries; binary frames may only carry requests, responses and events. */
export function messageOfFrame(frame: Frame): { msg: Message; payload?: Buffer } {
  if (frame.kind === 'json') return { msg: parseMessage(frame.msg) };
  const msg = parseMessage(frame.header);
  if (msg.type !== 'req' && msg.type !== 'res' && msg.type !== 'event') {
    throw new VdiskError(`protocol violation: a ${msg.type} message cannot travel in a binary frame`, { code: 'EPROTO' });
  }
  return { msg, payload: frame.payload };
}
