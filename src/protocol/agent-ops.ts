// Every request between the controller and an agent, typed in one map per direction: its arguments, its
// result, whether it carries a binary payload (either way), and the one parser that checks a peer's arguments.
// The controller sends with agentRequest() and the agent serves with agentDispatcher(); the agent sends with
// controllerRequest() and the controller checks with parseControllerArgs(). Neither side imports the other:
// what they share is here (the controller imports nothing from src/agent or the hot path).
import { VdiskError } from '../errors.js';
import type { Entry } from '../table/mapping-table.js';
import { bool, int, objects, optInt, optObjects, optStr, str } from './args.js';
import type { Connection, Reply, RequestHandler, RequestOptions } from './connection.js';
import type { Alternate, FaultAnswer } from './fault-answer.js';
import { isPlainObject } from './frame.js';
import { parseDelayCounts, parseGrantStats, parseIoCounts, type DelayCounts, type GrantPoolStats, type IoCounts } from './io-counts.js';
import { DEFAULT_LEASE_MS, leaseRangeText, validLease } from './lease.js';
import { errorText } from './reply.js';

type Args = Record<string, unknown>;
/** No arguments, or a result that carries nothing (whatever the peer answers is ignored). */
export type Empty = Record<string, never>;

/** A container as one host reaches it: its path there, and what its label must say (none before labels). */
export interface ContainerRef { id: number; path: string; uuid?: string; size?: number }
/** A container an agent does not serve (a wrong or missing label, a path that cannot be opened), and why. */
export interface ContainerError { id: number; problem: string }
export interface TableShape { diskId: number; name: string; size: number; segmentSize: number; readOnly: boolean }
export interface DeviceInfo { devId: number; path: string; queues: number }
/** What an agent reports in agent.status. */
export interface AgentStatus {
  pid: number; hostId: string; leaseMs: number; suspended: boolean; drained: boolean;
  disks: Array<{ diskId: number; name: string; device: string | null; io: IoCounts | null; delays: DelayCounts; grants?: GrantPoolStats }>;
}
/** The part of an agent's status the controller reads, field by field (a peer's answer). */
export interface AgentStatusReport {
  suspended: boolean;
  disks: Array<{ name: string; device: string | null; io: IoCounts | null; delays: DelayCounts | null; grants: GrantPoolStats | null }>;
}
/** A disk an agent holds when it registers, and the device serving it (null: none yet). */
export interface HeldDisk { diskId: number; devId: number | null }
/** `claims`: the agent's unconfirmed claims of the disk, applied before the fault (which may change the table). */
export interface FaultArgs { diskId: number; op: number; segment: number; states: number; offset: number; length?: number; claims?: Claim[] }
/** Which writes into shared No-write entries a disk's grants may serve (see disk.grant). */
export type CowClaims = 'whole' | 'copy';
/**
 * A granted segment an agent mapped itself at a Zero entry of a disk (see DESIGN.md, "First writes without a
 * round trip"): `offset` in bytes in `container`. Claims travel with grant requests, syncs, revocations and
 * registrations; applying one twice is harmless. `cow`: at a shared No-write entry instead (copy-on-write),
 * the whole segment's new contents already at the grant.
 */
export interface Claim { segment: number; container: number; offset: number; cow?: boolean }
/** A claim with its disk, as a registration carries them (from the claims files of a previous agent too). */
export interface DiskClaim extends Claim { diskId: number }
/** A segment granted to an agent: zeroed, the disk's, mapped by no table until the agent claims it. */
export interface GrantedSegment { container: number; offset: number }
/** A fault answer as it travels: the alternate's bitmap in base64 inside the JSON reply. */
export type FaultAnswerWire =
  | Exclude<FaultAnswer, { action: 'entry' }>
  | (Omit<Extract<FaultAnswer, { action: 'entry' }>, 'alternate'> & { alternate?: Omit<Alternate, 'bitmap'> & { bitmap: string } });

/**
 * One operation: args (the JSON arguments, the same type for the sender and the parsed result), payload
 * (what the request's binary payload holds, named in the refusal when it is missing), replyPayload (the
 * reply carries one), result (what the sender gets back) and reply (what the handler returns, if more).
 */
interface OpType { args: object; result: unknown; payload?: string; replyPayload?: true; reply?: unknown }

/** Controller -> agent: the commands of src/agent/agent.ts. */
export interface AgentOps {
  'containers.set': { args: { containers: ContainerRef[] }; result: { errors: ContainerError[] } };
  'table.create': { args: TableShape; result: Empty };
  'table.delete': { args: { diskId: number }; result: Empty };
  'table.get': { args: { diskId: number; first: number; count: number }; result: { first: number; count: number }; replyPayload: true };
  'table.set': { args: { diskId: number; first: number; blocking: boolean }; payload: 'the entries'; result: Empty };
  'table.alt': { args: { diskId: number; slot: number; container: number; offset: number }; payload: 'the bitmap'; result: Empty };
  'table.states': { args: { diskId: number; first: number; count: number; bits: number; set: boolean; blocking: boolean }; result: Empty };
  /** A hold on segments [first, first + count) ended: writes waiting on a 'delay' answer there fault again now. */
  'fault.cancel': { args: { diskId: number; first: number; count: number }; result: Empty };
  'device.start': { args: { diskId: number; queues: number; depth: number }; result: DeviceInfo };
  'device.recover': { args: { diskId: number; devId: number }; result: DeviceInfo };
  /** `claims`: what the device's writes claimed and the controller has not confirmed (applied by the detach). */
  'device.stop': { args: { diskId: number }; result: { claims: Claim[] } };
  'agent.status': { args: Empty; result: AgentStatusReport; reply: AgentStatus };
  'agent.exit': { args: Empty; result: Empty };
  /**
   * Before a flow changes the disk's table: the agent stops using its grants for the disk and answers with
   * every claim the controller has not confirmed; the controller applies those and frees the rest.
   */
  'grants.revoke': { args: { diskId: number }; result: { claims: Claim[] } };
}

/** Agent -> controller: registration, pings, map faults, ahead hints, syncs and container I/O errors. */
export interface ControllerOps {
  /** `claims`: claims not yet confirmed (this agent's and a previous one's): applied, then every grant the host had is freed. */
  'agent.register': { args: { pid: number; leaseMs: number; disks: HeldDisk[]; claims: DiskClaim[] }; result: { claims: number } };
  'agent.ping': { args: Empty; result: Empty };
  'fault': { args: FaultArgs; result: FaultAnswer; reply: FaultAnswerWire };
  'disk.ioerror': { args: { diskId: number; first: number; count: number }; result: { entries: number } };
  /**
   * A sequential writer entered segment `from` and `segment` is the first Zero one past it: map its next
   * window there (a hint: `mapped` is 0 when the controller declines). The window is pushed like any.
   */
  'fault.ahead': { args: { diskId: number; segment: number; from: number }; result: { mapped: number } };
  /**
   * Before a FLUSH or FUA write of the disk completes: every mapping the controller answered or pushed so far
   * is made durable (faults commit without their own fsync). `commits`: how many commits that covered.
   */
  'disk.sync': { args: { diskId: number; claims: Claim[] }; result: { commits: number } };
  /**
   * Applies the claims, then grants up to `want` more zeroed segments (none, with `refused` saying why, for a
   * disk with another holder, a read-only one, or without room). `claimed`: the claims applied. `cow`: these
   * grants may also serve writes into shared No-write entries (copy-on-write claims): whole-segment ones, or
   * any write within one segment, the agent copying the rest of the segment first.
   */
  'disk.grant': { args: { diskId: number; want: number; claims: Claim[] }; result: { grants: GrantedSegment[]; claimed: number; refused?: string; cow?: CowClaims } };
}

export type AgentOp = keyof AgentOps;
export type ControllerOp = keyof ControllerOps;

type PayloadName<T extends OpType> = T extends { payload: infer P } ? P : false;
/** The request payload a handler receives: the bytes when the operation carries them. */
export type PayloadOf<T extends OpType> = T extends { payload: string } ? Buffer : undefined;
/** What a handler returns: the reply (or result), with its payload when the operation's reply carries one. */
export type HandlerOut<T extends OpType> = T extends { replyPayload: true }
  ? { result: T extends { reply: infer S } ? S : T['result']; payload: Uint8Array }
  : T extends { reply: infer S } ? S : T['result'];
/** What a sender gets: the result, with the reply's payload when it carries one. */
export type SenderOut<T extends OpType> = T extends { replyPayload: true } ? { result: T['result']; payload: Buffer } : T['result'];

interface Spec<T extends OpType> {
  payload: PayloadName<T>;
  replyPayload: T extends { replyPayload: true } ? true : false;
  /** Checks a peer's arguments: EINVAL naming the first bad one, before anything changes. */
  args(a: Args): T['args'];
  /** Checks a peer's result; EPROTO when it is not the one this operation answers. */
  result(v: unknown, payload: Buffer | undefined): T['result'];
}
type Specs<M extends { [K in keyof M]: OpType }> = { readonly [K in keyof M]: Spec<M[K]> };

const done = (): Empty => ({});
const EIO = 5;

/** A peer's result read field by field with the argument checks; a bad one is EPROTO naming the operation. */
function resultOf<R>(op: string, v: unknown, read: (o: Args) => R): R {
  try {
    if (!isPlainObject(v)) throw new VdiskError('it is not an object', { code: 'EPROTO' });
    return read(v);
  } catch (err) {
    throw new VdiskError(`bad ${op} result from the peer: ${errorText(err)}`, { code: 'EPROTO', cause: err });
  }
}

const device = (op: string) => (v: unknown): DeviceInfo =>
  resultOf(op, v, (o) => ({ devId: int(o, 'devId'), path: str(o, 'path'), queues: int(o, 'queues') }));

export const AGENT_OPS: Specs<AgentOps> = {
  'containers.set': {
    payload: false, replyPayload: false,
    args: (a) => ({ containers: objects(a, 'containers').map(containerRef) }),
    // An agent from before labels answers nothing: no errors.
    result: (v) => resultOf('containers.set', v, (o) => ({ errors: optObjects(o, 'errors').map((e) => ({ id: int(e, 'id'), problem: str(e, 'problem') })) })),
  },
  'table.create': {
    payload: false, replyPayload: false, result: done,
    args: (a) => ({ diskId: int(a, 'diskId'), name: str(a, 'name'), size: int(a, 'size'), segmentSize: int(a, 'segmentSize'), readOnly: bool(a, 'readOnly') }),
  },
  'table.delete': { payload: false, replyPayload: false, result: done, args: (a) => ({ diskId: int(a, 'diskId') }) },
  'table.get': {
    payload: false, replyPayload: true,
    args: (a) => ({ diskId: int(a, 'diskId'), first: int(a, 'first'), count: int(a, 'count') }),
    result: (v) => resultOf('table.get', v, (o) => ({ first: int(o, 'first'), count: int(o, 'count') })),
  },
  'table.set': {
    payload: 'the entries', replyPayload: false, result: done,
    args: (a) => ({ diskId: int(a, 'diskId'), first: int(a, 'first'), blocking: bool(a, 'blocking') }),
  },
  'table.alt': {
    payload: 'the bitmap', replyPayload: false, result: done,
    args: (a) => ({ diskId: int(a, 'diskId'), slot: int(a, 'slot'), container: int(a, 'container'), offset: int(a, 'offset') }),
  },
  'table.states': {
    payload: false, replyPayload: false, result: done,
    args: (a) => ({
      diskId: int(a, 'diskId'), first: int(a, 'first'), count: int(a, 'count'), bits: int(a, 'bits'),
      set: bool(a, 'set'), blocking: bool(a, 'blocking'),
    }),
  },
  'fault.cancel': {
    payload: false, replyPayload: false, result: done,
    args: (a) => ({ diskId: int(a, 'diskId'), first: int(a, 'first'), count: int(a, 'count') }),
  },
  'device.start': {
    payload: false, replyPayload: false, result: device('device.start'),
    args: (a) => ({ diskId: int(a, 'diskId'), queues: int(a, 'queues'), depth: int(a, 'depth') }),
  },
  'device.recover': {
    payload: false, replyPayload: false, result: device('device.recover'),
    args: (a) => ({ diskId: int(a, 'diskId'), devId: int(a, 'devId') }),
  },
  'device.stop': {
    payload: false, replyPayload: false, args: (a) => ({ diskId: int(a, 'diskId') }),
    result: (v) => resultOf('device.stop', v, (o) => ({ claims: optObjects(o, 'claims').map(claimOf) })),
  },
  'agent.status': { payload: false, replyPayload: false, args: done, result: parseStatus },
  'agent.exit': { payload: false, replyPayload: false, args: done, result: done },
  'grants.revoke': {
    payload: false, replyPayload: false,
    args: (a) => ({ diskId: int(a, 'diskId') }),
    result: (v) => resultOf('grants.revoke', v, (o) => ({ claims: optObjects(o, 'claims').map(claimOf) })),
  },
};

export const CONTROLLER_OPS: Specs<ControllerOps> = {
  'agent.register': {
    payload: false, replyPayload: false,
    args: (a) => {
      const leaseMs = optInt(a, 'leaseMs') ?? DEFAULT_LEASE_MS;
      // Blocking changes to a lost agent's disks wait out its lease (protocol/lease.ts): it must be bounded.
      if (!validLease(leaseMs)) throw new VdiskError(`argument leaseMs must be ${leaseRangeText()}, not ${leaseMs}`, { code: 'EINVAL' });
      const disks = optObjects(a, 'disks').map((d) => ({ diskId: int(d, 'diskId'), devId: d.devId === null ? null : int(d, 'devId') }));
      return { leaseMs, disks, pid: optInt(a, 'pid') ?? 0, claims: optObjects(a, 'claims').map((c) => ({ diskId: int(c, 'diskId'), ...claimOf(c) })) };
    },
    result: (v) => resultOf('agent.register', v, (o) => ({ claims: optInt(o, 'claims') ?? 0 })),
  },
  'agent.ping': { payload: false, replyPayload: false, args: done, result: done },
  'fault': {
    payload: false, replyPayload: false, result: parseAnswer,
    args: (a) => {
      const f: FaultArgs = {
        diskId: int(a, 'diskId'), op: int(a, 'op'), segment: int(a, 'segment'), states: optInt(a, 'states') ?? 0, offset: optInt(a, 'offset') ?? 0,
      };
      const length = optInt(a, 'length');
      if (length !== undefined) f.length = length;
      const claims = optObjects(a, 'claims').map(claimOf);
      if (claims.length) f.claims = claims;
      return f;
    },
  },
  'disk.ioerror': {
    payload: false, replyPayload: false,
    args: (a) => {
      const count = int(a, 'count');
      // A report names the entries an I/O failed under: at least one (an empty range is a malformed report).
      if (count < 1) throw new VdiskError(`argument count must be at least 1, not ${count}`, { code: 'EINVAL' });
      return { diskId: int(a, 'diskId'), first: int(a, 'first'), count };
    },
    result: (v) => resultOf('disk.ioerror', v, (o) => ({ entries: int(o, 'entries') })),
  },
  'fault.ahead': {
    payload: false, replyPayload: false,
    args: (a) => ({ diskId: int(a, 'diskId'), segment: int(a, 'segment'), from: int(a, 'from') }),
    result: (v) => resultOf('fault.ahead', v, (o) => ({ mapped: int(o, 'mapped') })),
  },
  'disk.sync': {
    payload: false, replyPayload: false,
    args: (a) => ({ diskId: int(a, 'diskId'), claims: optObjects(a, 'claims').map(claimOf) }),
    result: (v) => resultOf('disk.sync', v, (o) => ({ commits: int(o, 'commits') })),
  },
  'disk.grant': {
    payload: false, replyPayload: false,
    args: (a) => {
      const want = int(a, 'want');
      if (want > MAX_GRANT) throw new VdiskError(`argument want must be at most ${MAX_GRANT}, not ${want}`, { code: 'EINVAL' });
      return { diskId: int(a, 'diskId'), want, claims: optObjects(a, 'claims').map(claimOf) };
    },
    result: (v) => resultOf('disk.grant', v, (o) => {
      const refused = optStr(o, 'refused');
      return {
        grants: optObjects(o, 'grants').map((g) => ({ container: int(g, 'container'), offset: int(g, 'offset') })),
        claimed: int(o, 'claimed'), ...(refused !== undefined ? { refused } : {}), ...cowClaimsOf(o),
      };
    }),
  },
};

/** The most segments one grant request may ask for. */
export const MAX_GRANT = 1024;

function cowClaimsOf(o: Args): { cow?: CowClaims } {
  const v = optStr(o, 'cow');
  if (v === undefined) return {};
  if (v !== 'whole' && v !== 'copy') throw new VdiskError(`argument cow must be "whole" or "copy", not ${JSON.stringify(v)}`, { code: 'EINVAL' });
  return { cow: v };
}

function claimOf(c: Args): Claim {
  return { segment: int(c, 'segment'), container: int(c, 'container'), offset: int(c, 'offset'), ...(bool(c, 'cow') ? { cow: true } : {}) };
}

/** A container reference: a label to check comes as a UUID and the size the label must say, both or neither. */
function containerRef(c: Args): ContainerRef {
  const ref: ContainerRef = { id: int(c, 'id'), path: str(c, 'path') };
  const uuid = optStr(c, 'uuid');
  if (uuid !== undefined) {
    ref.uuid = uuid;
    ref.size = int(c, 'size');
  }
  return ref;
}

/** An agent's status, reduced to what the controller shows: a field it cannot read is left out, not fatal. */
function parseStatus(v: unknown): AgentStatusReport {
  const r = isPlainObject(v) ? v : {};
  const disks = Array.isArray(r.disks) ? r.disks.filter(isPlainObject) : [];
  return {
    suspended: r.suspended === true,
    disks: disks.filter((d) => typeof d.name === 'string').map((d) => ({
      name: d.name as string, device: typeof d.device === 'string' ? d.device : null, io: parseIoCounts(d.io) ?? null,
      delays: parseDelayCounts(d.delays) ?? null, grants: parseGrantStats(d.grants) ?? null,
    })),
  };
}

/** The controller's fault answer as an agent reads it; anything it cannot use fails the I/O with EIO. */
export function parseAnswer(v: unknown): FaultAnswer {
  const a = v as Record<string, unknown> | null;
  if (a && a.action === 'entry' && typeof a.entry === 'object' && a.entry !== null) {
    const e = a.entry as Record<string, unknown>;
    if ([e.states, e.container, e.offset].every((x) => Number.isInteger(x))) {
      const entry: Entry = { states: e.states as number, container: e.container as number, offset: e.offset as number, alt: Number(e.alt ?? 0) | 0 };
      const alt = a.alternate as Record<string, unknown> | undefined;
      if (alt && [alt.slot, alt.container, alt.offset].every((x) => Number.isInteger(x)) && typeof alt.bitmap === 'string') {
        return { action: 'entry', entry, alternate: { slot: alt.slot as number, container: alt.container as number, offset: alt.offset as number, bitmap: Buffer.from(alt.bitmap, 'base64') } };
      }
      return { action: 'entry', entry };
    }
  }
  if (a && a.action === 'error' && Number.isInteger(a.errno) && (a.errno as number) > 0) return { action: 'error', errno: a.errno as number, setError: a.setError === true };
  if (a && a.action === 'delay' && typeof a.ms === 'number' && a.ms >= 0) return { action: 'delay', ms: Math.min(a.ms, 60_000) };
  return { action: 'error', errno: EIO };
}

/** A fault answer as the controller sends it: the alternate's bitmap travels as base64 in the JSON reply. */
export function encodeAnswer(answer: FaultAnswer): FaultAnswerWire {
  return answer.action === 'entry' && answer.alternate
    ? { ...answer, alternate: { ...answer.alternate, bitmap: answer.alternate.bitmap.toString('base64') } }
    : answer as FaultAnswerWire;
}

function unknownOp(op: string): VdiskError {
  return new VdiskError(`unknown operation ${op}`, { code: 'EUNKNOWNOP' });
}

function parse<M extends { [K in keyof M]: OpType }, K extends keyof M & string>(
  specs: Specs<M>, op: K, args: Args, payload: Buffer | undefined,
): M[K]['args'] {
  // Own entries only: "constructor" or "toString" must not reach Object.prototype's functions.
  if (!Object.hasOwn(specs, op)) throw unknownOp(op);
  const spec = specs[op];
  const parsed = spec.args(args);
  if (spec.payload !== false && !payload) throw new VdiskError(`${op} needs ${String(spec.payload)} as a binary payload`, { code: 'EINVAL' });
  return parsed;
}

/** Checks an agent's request to the controller (EUNKNOWNOP for an operation agents do not send). */
export function parseControllerArgs<K extends ControllerOp>(op: K, args: Args, payload?: Buffer): ControllerOps[K]['args'] {
  return parse(CONTROLLER_OPS, op, args, payload);
}

/** Checks the controller's command to an agent (EUNKNOWNOP for one that is not an agent operation). */
export function parseAgentArgs<K extends AgentOp>(op: K, args: Args, payload?: Buffer): AgentOps[K]['args'] {
  return parse(AGENT_OPS, op, args, payload);
}

/** Request options of a typed send: the payload is required exactly when the operation carries one. */
export type SendOptions<T extends OpType> = Omit<RequestOptions, 'payload' | 'onReply'> & {
  /** Runs synchronously with the checked result as the reply is decoded (see RequestOptions.onReply). */
  onResult?: (r: SenderOut<T>) => void;
} & (T extends { payload: string } ? { payload: Uint8Array } : { payload?: never });

async function send<M extends { [K in keyof M]: OpType }, K extends keyof M & string>(
  specs: Specs<M>, conn: Connection, op: K, args: M[K]['args'], opts: SendOptions<M[K]>,
): Promise<SenderOut<M[K]>> {
  const spec = specs[op];
  const { onResult, ...rest } = opts as SendOptions<OpType> & { payload?: Uint8Array };
  let out: SenderOut<M[K]> | undefined;
  const read = (r: Reply): SenderOut<M[K]> => {
    const result = spec.result(r.result, r.payload);
    if (!spec.replyPayload) return result as SenderOut<M[K]>;
    if (!r.payload) throw new VdiskError(`bad ${op} result from the peer: no binary payload`, { code: 'EPROTO' });
    return { result, payload: r.payload } as SenderOut<M[K]>;
  };
  const r = await conn.request(op, args as Args, {
    ...rest,
    onReply: (reply) => {
      out = read(reply);
      (onResult as ((v: SenderOut<M[K]>) => void) | undefined)?.(out);
    },
  });
  return out ?? read(r);
}

/** The controller's typed command to an agent: arguments and result typed from AgentOps, the result checked. */
export function agentRequest<K extends AgentOp>(conn: Connection, op: K, args: AgentOps[K]['args'], ...opts: OptionalIfNoPayload<AgentOps[K]>): Promise<SenderOut<AgentOps[K]>> {
  return send(AGENT_OPS, conn, op, args, (opts[0] ?? {}) as SendOptions<AgentOps[K]>);
}

/** The agent's typed request to the controller: arguments and result typed from ControllerOps, the result checked. */
export function controllerRequest<K extends ControllerOp>(conn: Connection, op: K, args: ControllerOps[K]['args'], ...opts: OptionalIfNoPayload<ControllerOps[K]>): Promise<SenderOut<ControllerOps[K]>> {
  return send(CONTROLLER_OPS, conn, op, args, (opts[0] ?? {}) as SendOptions<ControllerOps[K]>);
}

/** The options argument: required when the operation carries a payload, optional otherwise. */
type OptionalIfNoPayload<T extends OpType> = T extends { payload: string } ? [opts: SendOptions<T>] : [opts?: SendOptions<T>];

/** The agent's handler of each command, given the checked arguments (and the payload, when it carries one). */
export type AgentHandlers = {
  [K in AgentOp]: (args: AgentOps[K]['args'], payload: PayloadOf<AgentOps[K]>) => HandlerOut<AgentOps[K]> | Promise<HandlerOut<AgentOps[K]>>;
};

/**
 * The agent's request handler: checks the arguments with the operation's parser, then calls its handler in
 * the same synchronous run (nothing is awaited before it), so a handler that changes a table before its
 * first await still does so in the order the commands arrived.
 */
export function agentDispatcher(handlers: AgentHandlers): RequestHandler {
  return (op, args, payload) => {
    try {
      const parsed = parseAgentArgs(op as AgentOp, args, payload);
      const handler = handlers[op as AgentOp] as (a: unknown, p: Buffer | undefined) => unknown;
      return Promise.resolve(handler(parsed, payload));
    } catch (err) {
      return Promise.reject(err as Error);
    }
  };
}
