// Attaching disks to agents and keeping the agents' tables in step with the store: attach (create the table,
// load it in bulk, start the device), detach, reconcile an agent that (re)connects (reload what it holds,
// recover the quiesced devices of one that restarted), and push changes with the blocking flag.
// Every table flow of a disk runs under that disk's lock (see util/mutex.ts for why).
import type { ProgressFn } from './progress.js';
import { VdiskError } from '../errors.js';
import type { Connection } from '../protocol/connection.js';
import { agentRequest } from '../protocol/agent-ops.js';
import type { Alternate, FaultAnswer } from '../protocol/fault-answer.js';
import { ENTRY_BYTES, encodeEntry } from '../table/entry-codec.js';
import {
  STATE_ALTERNATE, STATE_ERROR, STATE_INVALID, STATE_NO_WRITE, STATE_ZERO, type Entry,
} from '../table/mapping-table.js';
import { KeyedMutex } from '../util/mutex.js';
import { answerFault, type FaultRequest } from './faults.js';
import type { SegmentIo } from './segment-io.js';
import { copyOutDone } from './copy-out.js';
import { ThinBatcher } from './thin-batch.js';
import { failpoint } from '../util/failpoints.js';
import { FAULT_WRITE } from '../protocol/fault-ops.js';
import { alternateOf, fold, listAlternates } from './partial.js';
import type { AgentLink, AgentRegistry } from './agents.js';
import { ContainerHealth, pathOn } from './container-labels.js';
import type { Attachment, Disk, Store } from './store.js';

/** Starting or recovering a device under emulation can take a while; a table command should not. */
const DEVICE_TIMEOUT_MS = 120_000;
const TABLE_TIMEOUT_MS = 60_000;
/** 16 MiB per table.set: a 1 TiB disk of 1 MiB segments is one message. */
const LOAD_ENTRIES = 1 << 20;
export const DEFAULT_QUEUES = 1;
export const DEFAULT_DEPTH = 128;

export interface AttachOptions { queues?: number; depth?: number }

export class Attachments {
  readonly locks = new KeyedMutex<number>();
  /**
   * Ranges whose writes wait (operator No-write through disk.states): diskId -> [first, count][]. A copy
   * of the store's, which persists them: after a restart a held segment must still hold, not copy on write.
   */
  private holds = new Map<number, Array<[number, number]>>();
  /** Attaches in progress ("diskId/hostId"): their devId-less records are not reconciliation's to complete. */
  private readonly attaching = new Set<string>();
  /** Group commit of first writes into thin segments (made on the first such fault: it needs the SegmentIo). */
  thin: ThinBatcher | undefined;
  /** The containers each host's agent holds in Error. */
  readonly health = new ContainerHealth();

  constructor(private readonly store: Store, private readonly agents: AgentRegistry, private readonly log: (m: string) => void) {}

  /**
   * Runs fn under the disk's lock. The yield first lets replies whose handlers already finished (fault answers
   * computed under this lock) reach the socket, so they never travel after a change that follows them.
   */
  /** Reads the persisted holds; the controller calls it before it serves any fault. */
  async loadHolds(): Promise<void> {
    this.holds = await this.store.tables.holds();
  }

  withDisk<T>(diskId: number, fn: () => Promise<T>): Promise<T> {
    return this.locks.run(diskId, async () => {
      await new Promise((resolve) => setImmediate(resolve));
      return fn();
    });
  }

  async attach(name: string, hostId: string, o: AttachOptions): Promise<{ device: string; devId: number; hostId: string; queues: number }> {
    const disk = await this.store.disk(name);
    const link = this.agents.get(hostId);
    if (!link) throw new VdiskError(`no agent for host ${hostId} is connected (start one: vdisk agent start --host-id ${hostId})`, { code: 'ENOAGENT' });
    const [existing] = await this.store.attachments({ diskId: disk.id, hostId });
    if (existing && existing.devId !== null) {
      throw new VdiskError(`disk ${name} is already attached on ${hostId} as /dev/ublkb${existing.devId}`, { code: 'EEXIST' });
    }
    const key = `${disk.id}/${hostId}`;
    if (this.attaching.has(key)) throw new VdiskError(`disk ${name} is being attached on ${hostId}`, { code: 'EBUSY' });
    this.attaching.add(key);
    try {
      // Recorded before the device exists: a crash in between leaves a record that reconciliation completes.
      await this.store.putAttachment(disk.id, hostId, null);
      failpoint('attach.recorded');
      try {
        const r = await this.open(link, disk, o);
        await this.store.putAttachment(disk.id, hostId, r.devId);
        return { device: `/dev/ublkb${r.devId}`, devId: r.devId, hostId, queues: r.queues };
      } catch (err) {
        await agentRequest(link.conn, 'table.delete', { diskId: disk.id }).catch(() => {});
        await this.store.removeAttachment(disk.id, hostId);
        throw err;
      }
    } finally {
      this.attaching.delete(key);
    }
  }

  async detach(name: string, hostId: string | undefined, force: boolean): Promise<{ detached: string[] }> {
    const disk = await this.store.disk(name);
    const atts = await this.store.attachments({ diskId: disk.id, hostId });
    if (!atts.length) throw new VdiskError(`disk ${name} is not attached${hostId ? ` on ${hostId}` : ''}`, { code: 'ENOENT' });
    const done: string[] = [];
    for (const a of atts) {
      const link = this.agents.get(a.hostId);
      if (link) {
        await agentRequest(link.conn, 'device.stop', { diskId: disk.id }, { timeoutMs: DEVICE_TIMEOUT_MS }).catch((err: VdiskError) => {
          if (err.code !== 'ENOENT') throw err; // ENOENT: the agent no longer holds it
        });
      } else if (!force) {
        throw new VdiskError(`the agent of ${a.hostId} is not connected, so its device cannot be stopped; ` +
          'start it (it recovers the device) or use --force to forget the attachment', { code: 'EAGAIN' });
      }
      await this.store.removeAttachment(disk.id, a.hostId);
      done.push(a.hostId);
    }
    return { detached: done };
  }

  /** An agent registered: reload what it holds, recover or start what it should hold, stop what it should not. */
  async reconcile(link: AgentLink, held: Array<{ diskId: number; devId: number | null }>): Promise<void> {
    await this.sendContainers(link);
    const atts = await this.store.attachments({ hostId: link.hostId });
    for (const a of atts) {
      if (this.attaching.has(`${a.diskId}/${a.hostId}`)) continue;
      try {
        await this.reconcileOne(link, a, held.find((h) => h.diskId === a.diskId));
      } catch (err) {
        this.log(`reconciling ${a.disk} on ${a.hostId}: ${(err as Error).message}`);
      }
    }
    for (const h of held) {
      if (atts.some((a) => a.diskId === h.diskId)) continue;
      this.log(`${link.hostId} serves disk ${h.diskId}, which is not attached there: stopping it`);
      await agentRequest(link.conn, 'device.stop', { diskId: h.diskId }, { timeoutMs: DEVICE_TIMEOUT_MS }).catch(() => {});
    }
  }

  private async reconcileOne(link: AgentLink, a: Attachment, held: { devId: number | null } | undefined): Promise<void> {
    const disk = await this.store.diskById(a.diskId);
    if (!disk) return;
    if (held && held.devId !== null) {
      await this.withDisk(disk.id, () => this.loadTable(link.conn, disk, false));
      return;
    }
    if (a.devId !== null) {
      try {
        await this.withDisk(disk.id, () => this.createTable(link.conn, disk));
        await agentRequest(link.conn, 'device.recover', { diskId: disk.id, devId: a.devId }, { timeoutMs: DEVICE_TIMEOUT_MS });
        this.log(`${link.hostId}: recovered ${a.disk} on /dev/ublkb${a.devId}`);
        return;
      } catch (err) {
        // The device is gone (host reboot): serve the disk on a new one.
        this.log(`${link.hostId}: cannot recover /dev/ublkb${a.devId} for ${a.disk} (${(err as Error).message}); starting a new device`);
        await agentRequest(link.conn, 'table.delete', { diskId: disk.id }).catch(() => {});
      }
    }
    const r = await this.open(link, disk, {});
    await this.store.putAttachment(disk.id, a.hostId, r.devId);
  }

  /** Table in bulk, then the device. START_DEV reads the partition table, so the lock is not held across it. */
  private async open(link: AgentLink, disk: Disk, o: AttachOptions): Promise<{ devId: number; queues: number }> {
    await this.sendContainers(link);
    await this.withDisk(disk.id, () => this.createTable(link.conn, disk));
    return agentRequest(link.conn, 'device.start',
      { diskId: disk.id, queues: o.queues ?? DEFAULT_QUEUES, depth: o.depth ?? DEFAULT_DEPTH }, { timeoutMs: DEVICE_TIMEOUT_MS });
  }

  private async createTable(conn: Connection, disk: Disk): Promise<void> {
    await agentRequest(conn, 'table.create', { diskId: disk.id, name: disk.name, size: disk.size, segmentSize: disk.segmentSize, readOnly: disk.readOnly },
      { timeoutMs: TABLE_TIMEOUT_MS });
    await this.loadTable(conn, disk, false);
  }

  /** The whole table in bulk, in messages of LOAD_ENTRIES entries (frames are capped at 64 MiB). */
  private async loadTable(conn: Connection, disk: Disk, blocking: boolean): Promise<void> {
    // Alternate records before the entries naming them (see alternates.ts).
    for (const a of await listAlternates(this.store, disk.id)) await this.sendAlternate(conn, disk, a);
    // Piece by piece from the store: the controller never holds more than one message of a big table.
    for (let first = 0; first < disk.segments; first += LOAD_ENTRIES) {
      const end = Math.min(disk.segments, first + LOAD_ENTRIES);
      const piece = await this.store.tables.readRange(disk, first, end - first);
      // The blocking flag on the last piece: the barrier then covers every piece before it too.
      await agentRequest(conn, 'table.set', { diskId: disk.id, first, blocking: blocking && end === disk.segments },
        { payload: piece, timeoutMs: TABLE_TIMEOUT_MS });
    }
  }

  /**
   * The containers as this host reaches them (its own path where it has one) with what their labels must say;
   * the agent answers which it holds in Error, and that is what `container ls` and `info` show.
   */
  async sendContainers(link: AgentLink): Promise<void> {
    const containers = (await this.store.listContainers()).filter((c) => !c.failed)
      .map((c) => ({ id: c.id, path: pathOn(c, link.hostId), ...(c.uuid === null ? {} : { uuid: c.uuid, size: c.size }) }));
    const { errors } = await agentRequest(link.conn, 'containers.set', { containers }, { timeoutMs: TABLE_TIMEOUT_MS });
    for (const e of errors) this.log(`${link.hostId}: container ${containers.find((c) => c.id === e.id)?.path ?? e.id} in Error there: ${e.problem}`);
    this.health.report(link.hostId, errors);
  }

  async broadcastContainers(): Promise<void> {
    await Promise.all(this.agents.list().map((l) => this.sendContainers(l).catch((err: Error) => this.log(`containers to ${l.hostId}: ${err.message}`))));
  }

  /**
   * Sends a change to every agent that may map the disk; resolves once each has applied it (and, blocking,
   * drained older I/O) or has certainly lost its lease. The caller holds the disk's lock.
   */
  async toHolders(disk: Disk, send: (conn: Connection) => Promise<unknown>): Promise<void> {
    const atts = await this.store.attachments({ diskId: disk.id });
    await Promise.all(atts.map(async (a) => {
      for (;;) {
        const link = await this.agents.reachableOrExpired(a.hostId);
        if (!link) return; // its lease ran out: it reloads everything when it comes back
        try {
          await send(link.conn);
          return;
        } catch (err) {
          if (link.conn.isOpen) throw err;
        }
      }
    }));
  }

  /**
   * A map fault from the agent on `from`. A changed mapping is pushed to every other holder before the answer
   * goes out: once the writer's write completes, a read on any host must find it, not a stale entry. A
   * copy-out first moves every other sharer's agents to the copy (outside this disk's lock: it takes theirs).
   */
  async fault(from: Connection, disk: Disk, f: FaultRequest, io: SegmentIo): Promise<FaultAnswer> {
    // The first write into a thin segment (the agent saw exactly Zero): grouped with its disk's others.
    if (f.op === FAULT_WRITE && f.states === STATE_ZERO) {
      this.thin ??= new ThinBatcher(this.store, io, this.locks, {
        isHeld: (id, segment) => this.isHeld(id, segment),
        pushEntries: (d, items) => this.pushEntries(d, items),
        single: (c, d, req) => this.faultOne(c, d, req, io),
      });
      return this.thin.fault(from, disk, f);
    }
    return this.faultOne(from, disk, f, io);
  }

  private async faultOne(from: Connection, disk: Disk, f: FaultRequest, io: SegmentIo): Promise<FaultAnswer> {
    let outcome = await this.locks.run(disk.id, async () => {
      const o = await answerFault(this.store, io, disk, f, this.isHeld(disk.id, f.segment));
      if (!o.copyOut) await this.pushAnswer(from, disk, f.segment, o.answer);
      return o;
    });
    if (outcome.copyOut) {
      for (const id of outcome.copyOut) {
        const other = await this.store.diskById(id);
        if (other) await this.withDisk(other.id, () => this.pushStored(other, f.segment, true));
      }
      outcome = await this.locks.run(disk.id, async () => {
        await copyOutDone(this.store, disk.id, f.segment);
        const o = await answerFault(this.store, io, disk, f, this.isHeld(disk.id, f.segment));
        if (!o.copyOut) await this.pushAnswer(from, disk, f.segment, { ...o.answer, allocated: true } as FaultAnswer);
        return o;
      });
    }
    if (outcome.foldSoon) {
      setImmediate(() => {
        this.fold(disk, f.segment, io).catch((err: Error) => this.log(`fold of ${disk.name} segment ${f.segment}: ${err.message}`));
      });
    }
    return outcome.answer;
  }

  /** The answer's new mapping to every holder but the one that faulted (blocking when storage was released). */
  private async pushAnswer(from: Connection, disk: Disk, segment: number, answer: FaultAnswer): Promise<void> {
    if (answer.action !== 'entry' || !answer.allocated) return;
    await new Promise((resolve) => setImmediate(resolve)); // earlier replies first (see withDisk)
    await this.toHolders(disk, async (conn) => {
      if (conn !== from) await this.sendEntry(conn, disk, segment, answer.entry, answer.alternate, answer.reclaimed === true);
    });
  }

  /**
   * New mappings of a batch of faults to every holder, each but to the agent that faulted it (the entries
   * sent concurrently per holder: a batch's pushes cost one round of messages, not one per fault).
   */
  private async pushEntries(disk: Disk, items: Array<{ from: Connection; segment: number; entry: Entry }>): Promise<void> {
    await new Promise((resolve) => setImmediate(resolve)); // earlier replies first (see withDisk)
    await this.toHolders(disk, async (conn) => {
      await Promise.all(items.filter((it) => it.from !== conn).map((it) => this.sendEntry(conn, disk, it.segment, it.entry, undefined, false)));
    });
  }

  /** Sends the stored entry (and its alternate) to every holder of the disk; the caller holds its lock. */
  private async pushStored(disk: Disk, segment: number, blocking: boolean): Promise<void> {
    const [entry] = await this.store.tables.getEntries(disk, segment, 1);
    const alternate = entry.states & STATE_ALTERNATE ? await alternateOf(this.store, disk.id, segment) : undefined;
    await this.toHolders(disk, (conn) => this.sendEntry(conn, disk, segment, entry, alternate, blocking));
  }

  private async sendEntry(conn: Connection, disk: Disk, segment: number, entry: Entry, alternate: Alternate | undefined, blocking: boolean): Promise<void> {
    if (alternate) await this.sendAlternate(conn, disk, alternate);
    const bytes = Buffer.alloc(ENTRY_BYTES);
    encodeEntry(bytes, 0, entry);
    await agentRequest(conn, 'table.set', { diskId: disk.id, first: segment, blocking }, { payload: bytes, timeoutMs: TABLE_TIMEOUT_MS });
  }

  private async sendAlternate(conn: Connection, disk: Disk, a: Alternate): Promise<void> {
    await agentRequest(conn, 'table.alt', { diskId: disk.id, slot: a.slot, container: a.container, offset: a.offset }, { payload: a.bitmap, timeoutMs: TABLE_TIMEOUT_MS });
  }

  /**
   * Folds an Alternate segment into a plain private one and pushes it with the blocking flag: afterwards no
   * request planned with the old entry is in flight, so its slot and the shared segment may be reused.
   */
  async fold(disk: Disk, segment: number, io: SegmentIo): Promise<boolean> {
    return this.withDisk(disk.id, () => this.foldLocked(disk, segment, io));
  }

  async foldLocked(disk: Disk, segment: number, io: SegmentIo): Promise<boolean> {
    const entry = await fold(this.store, disk, segment, (from, to, ranges) => io.copyRanges(from, to, ranges));
    if (!entry) return false;
    const bytes = Buffer.alloc(ENTRY_BYTES);
    encodeEntry(bytes, 0, entry);
    await this.toHolders(disk, (conn) => agentRequest(conn, 'table.set', { diskId: disk.id, first: segment, blocking: true }, { payload: bytes, timeoutMs: TABLE_TIMEOUT_MS }));
    return true;
  }

  /** Folds every Alternate segment of the disk (on request, and before a snapshot shares its table). */
  async foldAll(disk: Disk, io: SegmentIo, progress?: ProgressFn): Promise<number> {
    return this.withDisk(disk.id, () => this.foldAllLocked(disk, io, progress));
  }

  private async foldAllLocked(disk: Disk, io: SegmentIo, progress?: ProgressFn): Promise<number> {
    let n = 0;
    const alternates = await listAlternates(this.store, disk.id);
    for (const [k, a] of alternates.entries()) {
      progress?.(k, alternates.length);
      if (await this.foldLocked(disk, a.segment, io)) n++;
    }
    progress?.(alternates.length, alternates.length);
    return n;
  }

  /**
   * A container failed under entries [first, first + count): the mapped ones turn to Error, durably, then on
   * every holder (blocking: no request still uses the old entry when this returns). Returns how many changed.
   */
  async markIoError(disk: Disk, first: number, count: number): Promise<number> {
    return this.withDisk(disk.id, async () => {
      const entries = await this.store.tables.getEntries(disk, first, count);
      let changed = 0;
      const next = entries.map((e) => {
        if (e.states & (STATE_INVALID | STATE_ZERO | STATE_ERROR)) return e;
        changed++;
        return { ...e, states: e.states | STATE_ERROR };
      });
      if (!changed) return 0;
      await this.store.tables.setEntries(disk, first, next);
      const bytes = Buffer.alloc(count * ENTRY_BYTES);
      next.forEach((e, k) => encodeEntry(bytes, k, e));
      await this.toHolders(disk, (conn) => agentRequest(conn, 'table.set', { diskId: disk.id, first, blocking: true }, { payload: bytes, timeoutMs: TABLE_TIMEOUT_MS }));
      return changed;
    });
  }

  /** Reloads the whole table on every holder, with the blocking flag (after container failure, for instance). */
  async pushTable(disk: Disk): Promise<void> {
    await this.withDisk(disk.id, () => this.toHolders(disk, (conn) => this.loadTable(conn, disk, true)));
  }

  isHeld(diskId: number, segment: number): boolean {
    return (this.holds.get(diskId) ?? []).some(([f, n]) => segment >= f && segment < f + n);
  }

  /**
   * Snapshot: No-write on every entry on every agent mapping the disk, with the blocking flag (no write is in
   * flight afterwards and new ones fault, waiting for this lock), then the store's copy in one transaction.
   */
  async snapshot(diskName: string, snapName: string, io: SegmentIo): Promise<Disk> {
    const disk = await this.store.disk(diskName);
    if (await this.store.disk(snapName).then(() => true, () => false)) throw new VdiskError(`disk ${snapName} already exists`, { code: 'EEXIST' });
    return this.withDisk(disk.id, async () => {
      // Tables are shared whole segment by segment: alternates fold first (new ones need a fault, i.e. this lock).
      await this.foldAllLocked(disk, io);
      await this.toHolders(disk, (conn) => agentRequest(conn, 'table.states',
        { diskId: disk.id, first: 0, count: disk.segments, bits: STATE_NO_WRITE, set: true, blocking: true }, { timeoutMs: TABLE_TIMEOUT_MS }));
      const snap = await this.store.cow.snapshot(diskName, snapName);
      failpoint('snapshot.committed');
      return snap;
    });
  }

  /** Sets or clears state bits over a range, persistently and then on every holder with the blocking flag. */
  async changeStates(disk: Disk, first: number, count: number, bits: number, set: boolean): Promise<void> {
    await this.withDisk(disk.id, async () => {
      // An operator's No-write holds writes (rather than copying them away) until it is cleared.
      // Clearing drops every hold the cleared range overlaps.
      const list = this.holds.get(disk.id) ?? [];
      const holds: Array<[number, number]> = !(bits & STATE_NO_WRITE) ? list
        : set ? [...list, [first, count]] : list.filter(([f, n]) => f + n <= first || f >= first + count);
      await this.store.tables.updateEntriesAndHolds(disk, first, count, (e) => ({ ...e, states: set ? e.states | bits : e.states & ~bits }), holds);
      this.holds.set(disk.id, holds);
      await this.toHolders(disk, (conn) => agentRequest(conn, 'table.states', { diskId: disk.id, first, count, bits, set, blocking: true }, { timeoutMs: TABLE_TIMEOUT_MS }));
      for (const [f, n] of list.filter((h) => !holds.includes(h))) await this.cancelDelays(disk, f, n); // holds that ended
    });
  }

  /**
   * A hold ended: writes parked on its 'delay' answers fault again now, not at the end of their delay. To
   * every connected agent (a fault's agent need not be a recorded holder yet, during an attach); sent after
   * the delay answers (the caller holds the disk's lock, which those answers were computed under). Best
   * effort: an agent that loses its link ends its delays itself, and a delay ends at its time anyway.
   */
  private async cancelDelays(disk: Disk, first: number, count: number): Promise<void> {
    await Promise.all(this.agents.list().map((l) => agentRequest(l.conn, 'fault.cancel', { diskId: disk.id, first, count }, { timeoutMs: TABLE_TIMEOUT_MS })
      .catch((err: Error) => this.log(`fault.cancel to ${l.hostId}: ${err.message}`))));
  }
}
