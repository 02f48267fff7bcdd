// The agent: one per host. Keeps one connection to the controller (reconnecting forever), executes its table
// and device commands, forwards map faults, and enforces the lease: if it cannot reach the controller for
// longer than leaseMs it makes every table Invalid, so I/O waits (suspends) until the controller reloads it.
// Ordering rule: every table change, from a command or from a fault answer, is applied synchronously in the
// frame's dispatch (request handlers change the table before their first await; fault answers go through
// controllerRequest's onResult, that is RequestOptions.onReply), so changes apply in the order the controller sent them.
import { failpoint } from '../util/failpoints.js';
import { FAULT_WRITE } from '../protocol/fault-ops.js';
import { VdiskError } from '../errors.js';
import { connect, describeEndpoint, type Endpoint } from '../protocol/client.js';
import type { Connection } from '../protocol/connection.js';
import { ENTRY_BYTES, encodeEntry } from '../table/entry-codec.js';
import { UblkControlDevice } from '../ublk/control.js';
import type { Fault } from '../ublk/device.js';
import { sleep } from '../util/sleep.js';
import { agentDispatcher, controllerRequest } from '../protocol/agent-ops.js';
import { AgentDisk, type FaultAnswer } from './agent-disk.js';
import { AgentContainers } from './containers.js';
import { GrantPool, claimsDir, readClaimsFiles, type AskAnswer } from './grant-pool.js';
import type { Claim, DiskClaim } from '../protocol/agent-ops.js';
import fs from 'node:fs';
import path from 'node:path';
import { DEFAULT_LEASE_MS, leaseCheckMs, leaseDrainMs, leaseRangeText, validLease } from '../protocol/lease.js';

/** How long a device start waits for its disk's first grants (see 'device.start'). */
const FIRST_GRANTS_WAIT_MS = 2000;

export { DEFAULT_LEASE_MS } from '../protocol/lease.js';

export interface AgentOptions {
  /** The controller's Unix socket on this host, or its TLS address with this host's credential. */
  controller: Endpoint;
  hostId: string;
  leaseMs?: number;
  log?: (msg: string) => void;
  /** Where the claims files live (grant-pool.ts's claimsDir by default). */
  claimsDir?: string;
}

export class Agent {
  readonly hostId: string;
  readonly leaseMs: number;
  readonly disks = new Map<number, AgentDisk>();
  private readonly containers = new AgentContainers();
  private control: UblkControlDevice | undefined;
  private conn: Connection | undefined;
  private ready: Promise<Connection>;
  private readyResolve!: (c: Connection) => void;
  /** When the last successful exchange with the controller started (a send time, so the lease errs early). */
  private lastContact = Date.now();
  private suspended = false;
  /** The current suspension has drained every request planned before it: the state the controller waits for. */
  private drained = false;
  private stopping = false;
  private readonly timers: NodeJS.Timeout[] = [];
  private readonly log: (msg: string) => void;
  readonly exited: Promise<void>;
  /** Why the agent gave up, when the controller refused its credential (it then exits). */
  refused: VdiskError | undefined;
  private exit!: () => void;
  private readonly claimsDir: string;
  /** Claims a previous agent of this host left in its files, by disk: sent at registration until one succeeds. */
  private recovered = new Map<number, Claim[]>();

  constructor(private readonly o: AgentOptions) {
    this.hostId = o.hostId;
    this.leaseMs = o.leaseMs ?? DEFAULT_LEASE_MS;
    // The controller would refuse its registration, over and over.
    if (!validLease(this.leaseMs)) throw new VdiskError(`the lease must be ${leaseRangeText()}, not ${this.leaseMs}`, { code: 'EINVAL' });
    this.log = o.log ?? ((m) => process.stderr.write(`vdisk agent ${o.hostId}: ${m}\n`));
    this.ready = new Promise((resolve) => { this.readyResolve = resolve; });
    this.exited = new Promise((resolve) => { this.exit = resolve; });
    this.claimsDir = o.claimsDir ?? claimsDir(o.hostId, typeof o.controller === 'string' ? path.resolve(o.controller) : describeEndpoint(o.controller));
  }

  /** Connects (retrying until the controller answers) and keeps the link and the lease alive. */
  async start(): Promise<void> {
    this.recovered = readClaimsFiles(this.claimsDir);
    const n = [...this.recovered.values()].reduce((a, c) => a + c.length, 0);
    if (n) this.log(`${n} claim(s) of a previous agent found in ${this.claimsDir}: sent with the registration`);
    this.timers.push(setInterval(() => this.checkLease(), leaseCheckMs(this.leaseMs)));
    this.timers.push(setInterval(() => { void this.ping(); }, Math.max(100, Math.floor(this.leaseMs / 4))));
    void this.linkLoop();
  }

  /** Exits leaving every device quiesced: a new agent for this host recovers them. */
  async stop(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    for (const t of this.timers) clearInterval(t);
    await this.conn?.close();
    this.exit();
  }

  private async linkLoop(): Promise<void> {
    let announced = false;
    while (!this.stopping) {
      let conn: Connection;
      try {
        conn = (await connect(this.o.controller, { role: 'agent', hostId: this.hostId, timeoutMs: 2000 })).conn;
      } catch (err) {
        if (typeof this.o.controller !== 'string' && (err as VdiskError).code === 'EACCES') {
          // A refused credential (revoked, replaced, another host's) stays refused: retrying would only load
          // the controller with handshakes. The devices stay quiesced for an agent with a valid credential.
          this.refused = err as VdiskError;
          this.log(`the controller refused this host's credential, exiting: ${(err as Error).message}`);
          await this.stop();
          return;
        }
        if (!announced) this.log(`waiting for the controller: ${(err as Error).message}`);
        announced = true;
        await sleep(200);
        continue;
      }
      announced = false;
      conn.onRequest((op, args, payload) => this.serve(op, args, payload).catch(toVdiskError));
      const sent = Date.now();
      // Every unconfirmed claim goes with the registration, which frees whatever this host had been granted.
      const claims: DiskClaim[] = [...this.recovered].flatMap(([diskId, list]) => list.map((c) => ({ diskId, ...c })));
      const upTo = new Map<AgentDisk, number>();
      for (const d of this.disks.values()) {
        if (!d.grants) continue;
        const u = d.grants.unconfirmed();
        upTo.set(d, u.upTo);
        claims.push(...u.claims.map((c) => ({ diskId: d.id, ...c })));
      }
      try {
        await controllerRequest(conn, 'agent.register', {
          pid: process.pid, leaseMs: this.leaseMs,
          disks: [...this.disks.values()].map((d) => ({ diskId: d.id, devId: d.device?.devId ?? null })),
          claims,
        });
        for (const [d, u] of upTo) d.grants?.confirm(u);
        for (const id of this.recovered.keys()) if (!this.disks.has(id)) fs.rmSync(path.join(this.claimsDir, `${id}.claims`), { force: true });
        this.recovered.clear();
      } catch (err) {
        this.log(`registration failed: ${(err as Error).message}`);
        conn.socket.destroy();
        await sleep(200);
        continue;
      }
      this.lastContact = sent;
      // Suspended tables stay Invalid; the controller reloads them now, and faults are answered meanwhile.
      this.suspended = false;
      this.drained = false;
      this.conn = conn;
      this.log('connected to the controller');
      this.readyResolve(conn);
      await conn.closed;
      this.conn = undefined;
      // Grants are tied to the link: the next registration frees them all.
      for (const d of this.disks.values()) d.grants?.drop();
      // A cancel can no longer reach us on this link: parked faults ask again (and wait for the next link).
      for (const d of this.disks.values()) d.cancelDelays(0, d.table.segments);
      this.ready = new Promise((resolve) => { this.readyResolve = resolve; });
      if (!this.stopping) this.log('lost the controller; reconnecting');
    }
  }

  private async ping(): Promise<void> {
    const conn = this.conn;
    if (!conn) return;
    const sent = Date.now();
    try {
      await controllerRequest(conn, 'agent.ping', {}, { timeoutMs: this.leaseMs });
      if (sent > this.lastContact) this.lastContact = sent;
    } catch {
      // the lease check decides
    }
  }

  private checkLease(): void {
    if (this.suspended || Date.now() - this.lastContact <= this.leaseMs) return;
    // The controller may now change mappings it believes we no longer cache: drop them all.
    this.suspended = true;
    this.drained = false;
    for (const d of this.disks.values()) {
      // The controller may free our grants once the lease is out: answers still on their way are void too.
      // Dropped first: a queue's claim under way ends before the entries turn Invalid, and none starts after.
      d.grants?.drop(true);
      d.suspend();
    }
    this.log(`lease of ${this.leaseMs} ms expired: I/O suspended until the controller reloads the tables`);
    void this.drainSuspended();
  }

  /**
   * Waits, within the drain budget the controller counts on (protocol/lease.ts), for every request planned
   * before the suspension. One still running past it is a stuck container request, which nothing in
   * userspace can fence: said loudly, since the controller may remap its segment meanwhile.
   */
  private async drainSuspended(): Promise<void> {
    const budget = leaseDrainMs(this.leaseMs);
    const started = Date.now();
    const results = await Promise.allSettled([...this.disks.values()].map((d) => d.barrier(budget)));
    if (!this.suspended) return; // the controller came back meanwhile
    const stuck = results.filter((r) => r.status === 'rejected').length;
    if (stuck) {
      this.log(`${stuck} disk(s) still have requests from before the suspension after ${budget} ms: their containers may be stuck`);
    } else {
      this.drained = true;
      this.log(`suspended: every request planned before it has completed (${results.length} disk(s), ${Date.now() - started} ms)`);
    }
  }

  /** The lease's state, for tests and status: suspended (tables Invalid) and drained. */
  get leaseState(): { suspended: boolean; drained: boolean } {
    return { suspended: this.suspended, drained: this.drained };
  }

  /**
   * Sends an idempotent request until the controller answers it: waits for a link as long as it takes (a
   * lost controller holds I/O, never fails it) and asks again on a new link when the old one broke.
   * Rejects with the error the controller answered.
   */
  private async untilAnswered<T>(send: (conn: Connection) => Promise<T>): Promise<T> {
    for (;;) {
      const conn = this.conn ?? await this.ready;
      try {
        return await send(conn);
      } catch (err) {
        const code = (err as VdiskError).code;
        if (code !== 'ECONNRESET' && code !== 'ETIMEDOUT' && conn.isOpen) throw err;
        await sleep(50);
      }
    }
  }

  private async sendFault(disk: AgentDisk, f: Fault, onAnswer: (a: FaultAnswer) => void): Promise<FaultAnswer> {
    try {
      const answer = await this.untilAnswered(async (conn) => {
        let a: FaultAnswer | undefined;
        // A discard or a write-zeroes carries the unconfirmed claims: a claim applied after it would undo it. (A
        // write fault's segment was never claimed, or it would not fault.)
        const { claims, upTo } = f.op !== FAULT_WRITE && disk.grants ? disk.grants.unconfirmed() : { claims: [], upTo: 0 };
        await controllerRequest(conn, 'fault', {
          diskId: disk.id, op: f.op, segment: f.segment, states: f.states, offset: f.offset, length: f.length, ...(claims.length ? { claims } : {}),
        }, {
          timeoutMs: 0,
          onResult: (r) => {
            a = r;
            disk.grants?.confirm(upTo);
            if (disk.table.segments > f.segment) onAnswer(r);
          },
        });
        return a;
      });
      return answer ?? { action: 'error', errno: 5 };
    } catch (err) {
      this.log(`${disk.describe(f)}: ${(err as Error).message}`);
      return { action: 'error', errno: 5 };
    }
  }

  /** A disk.sync (AgentDisk's SyncSender): held and asked again as a fault is (a sync is idempotent). */
  private async sendSync(disk: AgentDisk): Promise<number> {
    try {
      // The claims first, in the same request: the sync's durable commit covers them.
      const { claims, upTo } = disk.grants?.unconfirmed() ?? { claims: [], upTo: 0 };
      await this.untilAnswered((conn) => controllerRequest(conn, 'disk.sync', { diskId: disk.id, claims }, { timeoutMs: 0 }));
      disk.grants?.confirm(upTo);
      return 0;
    } catch (err) {
      this.log(`sync of ${disk.shape.name}: ${(err as Error).message}`);
      return -5;
    }
  }

  /** A grant request (GrantPool's asker): on the link there is, never retried (a first write faults meanwhile). */
  private async sendGrant(disk: AgentDisk, want: number, claims: Claim[], accept: (a: AskAnswer) => void): Promise<void> {
    const conn = this.conn;
    if (!conn) throw new VdiskError('no link to the controller', { code: 'ECONNRESET' });
    const r = await controllerRequest(conn, 'disk.grant', { diskId: disk.id, want, claims }, { timeoutMs: 0, onResult: accept });
    if (r.refused && want > 0) this.log(`no grants for ${disk.shape.name}: ${r.refused}`);
  }

  /**
   * An ahead hint (AgentDisk's AheadSender): sent once on the link there is, never retried (a writer that
   * outruns its window faults as usual). The controller's refusal is normal and not logged.
   */
  private async sendAhead(disk: AgentDisk, segment: number, from: number): Promise<void> {
    const conn = this.conn;
    if (!conn) return;
    try {
      await controllerRequest(conn, 'fault.ahead', { diskId: disk.id, segment, from }, { timeoutMs: 0 });
    } catch (err) {
      if (conn.isOpen) this.log(`ahead hint for ${disk.shape.name} segment ${segment}: ${(err as Error).message}`);
    }
  }

  /** The controller records Error for the mapped entries in the range and pushes it to every holder. */
  private async sendIoError(disk: AgentDisk, first: number, count: number): Promise<void> {
    this.log(`I/O error from a container under ${disk.shape.name} segments ${first}..${first + count - 1}`);
    for (;;) {
      const conn = this.conn ?? await this.ready;
      try {
        await controllerRequest(conn, 'disk.ioerror', { diskId: disk.id, first, count }, { timeoutMs: 0 });
        return;
      } catch (err) {
        if (conn.isOpen) {
          this.log(`reporting the I/O error failed: ${(err as Error).message}`);
          return;
        }
        await sleep(50);
      }
    }
  }

  /**
   * Controller -> agent commands, each given its arguments checked by its parser (protocol/agent-ops.ts).
   * Table changes happen before the first await (see the ordering rule): the dispatcher calls the handler in
   * the frame's dispatch.
   */
  private readonly serve = agentDispatcher({
    'containers.set': async ({ containers }) => {
      const { retired, errors } = this.containers.update(containers, this.log);
      if (retired.length) {
        // Publish, drain, close: every request planned with a replaced fd completes before it is closed.
        // A barrier that fails (a stuck queue) leaves them open: a leaked fd, never a recycled one.
        await Promise.all([...this.disks.values()].map((d) => d.barrier()));
        this.containers.retire(retired);
      }
      return { errors }; // the containers in Error on this host, for the controller to show
    },
    'table.create': (shape) => {
      const cur = this.disks.get(shape.diskId);
      if (cur?.busy) throw new VdiskError(`disk ${shape.name} is being served${cur.device ? ` by ${cur.device.path}` : ''}: stop it first`, { code: 'EBUSY' });
      cur?.grants?.close();
      const d = new AgentDisk(shape, this.containers, (d, f, on) => this.sendFault(d, f, on),
        (d, first, count) => { void this.sendIoError(d, first, count); }, this.log,
        (d, segment, from) => this.sendAhead(d, segment, from), (d) => this.sendSync(d));
      if (!shape.readOnly) {
        d.grants = new GrantPool(path.join(this.claimsDir, `${shape.diskId}.claims`), shape.segmentSize,
          (want, claims, accept) => this.sendGrant(d, want, claims, accept), this.log);
        // Asked for now, not at the first write: that write would otherwise wait for a fault anyway.
        d.grants.prime();
      }
      this.disks.set(shape.diskId, d);
      return {};
    },
    'table.delete': ({ diskId }) => {
      const d = this.disk(diskId);
      if (d.busy) throw new VdiskError(`disk ${d.shape.name} is being served${d.device ? ` by ${d.device.path}` : ''}: stop it first`, { code: 'EBUSY' });
      d.grants?.close();
      this.disks.delete(d.id);
      return {};
    },
    'table.get': ({ diskId, first, count }) => {
      const d = this.disk(diskId);
      const out = Buffer.alloc(count * ENTRY_BYTES);
      for (let k = 0; k < count; k++) encodeEntry(out, k, d.table.get(first + k));
      return { payload: out, result: { first, count } };
    },
    'table.set': async ({ diskId, first, blocking }, entries) => {
      const d = this.disk(diskId);
      d.setEntries(first, entries);
      if (blocking) {
        await d.barrier();
        failpoint('agent.blocked');
      } else failpoint('agent.loaded');
      return {};
    },
    'table.alt': ({ diskId, slot, container, offset }, bitmap) => {
      this.disk(diskId).setAlternate({ slot, container, offset, bitmap });
      return {};
    },
    'table.states': async ({ diskId, first, count, bits, set, blocking }) => {
      const d = this.disk(diskId);
      d.changeStates(first, count, bits, set);
      if (blocking) {
        await d.barrier();
        failpoint('agent.blocked');
      }
      return {};
    },
    'fault.cancel': ({ diskId, first, count }) => {
      this.disks.get(diskId)?.cancelDelays(first, count);
      return {};
    },
    'device.start': async ({ diskId, queues, depth }) => {
      const d = this.disk(diskId);
      // The first grants (asked for at table.create) before the device: the controller answers them now, the
      // table's load having released the disk's lock, and the first writes after the attach then claim rather
      // than fault. Bounded: a slow or refused answer only delays nothing more than this.
      await d.grants?.answered(FIRST_GRANTS_WAIT_MS);
      const dev = await d.start(this.ctl(), queues, depth);
      return { devId: dev.devId, path: dev.path, queues: dev.queues };
    },
    'device.recover': async ({ diskId, devId }) => {
      const dev = await this.disk(diskId).recover(this.ctl(), devId);
      failpoint('agent.recovered');
      return { devId: dev.devId, path: dev.path, queues: dev.queues };
    },
    'device.stop': async ({ diskId }) => {
      const d = this.disk(diskId);
      await d.stop();
      // Drained: the claims are final, and they go with the reply, which the detach applies before it ends.
      const claims = d.grants?.unconfirmed().claims ?? [];
      d.grants?.close();
      this.disks.delete(d.id);
      return { claims };
    },
    'grants.revoke': ({ diskId }) => {
      const d = this.disks.get(diskId);
      d?.grants?.drop();
      return { claims: [...(this.recovered.get(diskId) ?? []), ...(d?.grants?.unconfirmed().claims ?? [])] };
    },
    'agent.status': () => ({
      pid: process.pid, hostId: this.hostId, leaseMs: this.leaseMs, suspended: this.suspended, drained: this.drained,
      disks: [...this.disks.values()].map((d) => ({ diskId: d.id, name: d.shape.name, device: d.device?.path ?? null, io: d.device?.ioStats() ?? null,
        delays: { parked: d.delayed, ...d.delayEnds }, ...(d.grants ? { grants: d.grants.report() } : {}) })),
    }),
    'agent.exit': () => {
      setImmediate(() => { void this.stop(); });
      return {};
    },
  });

  private disk(id: number): AgentDisk {
    const d = this.disks.get(id);
    if (!d) throw new VdiskError(`this agent holds no table for disk ${id}`, { code: 'ENOENT' });
    return d;
  }

  /** Opened on first use, so an agent without devices (and the host's unit tests) needs no ublk. */
  private ctl(): UblkControlDevice {
    this.control ??= UblkControlDevice.open();
    return this.control;
  }
}

/** Table range and entry checks throw RangeError: the controller gets ERANGE rather than a code-less failure. */
function toVdiskError(err: unknown): never {
  if (err instanceof RangeError) throw new VdiskError(err.message, { code: 'ERANGE' });
  throw err;
}
