// Map faults and the copy-on-write policy around them: the answer (faults.ts) under the disk's lock, first
// writes into thin segments grouped by the ThinBatcher, copy-outs, new mappings pushed to the other holders
// before the answer, folds of Alternate segments, snapshots, and the operator's holds (No-write that waits).
import { Hosts } from './hosts.js';
import { TableCache } from './table-cache.js';
import type { ProgressFn } from './progress.js';
import { VdiskError } from '../errors.js';
import type { Connection } from '../protocol/connection.js';
import type { FaultAnswer } from '../protocol/fault-answer.js';
import { FAULT_WRITE } from '../protocol/fault-ops.js';
import { ENTRY_BYTES, encodeEntry } from '../table/entry-codec.js';
import { STATE_ALTERNATE, STATE_NO_WRITE, STATE_ZERO, type Entry } from '../table/mapping-table.js';
import type { KeyedMutex } from '../util/mutex.js';
import { failpoint } from '../util/failpoints.js';
import type { AgentClient } from './agent-client.js';
import { answerFault, type FaultRequest } from './faults.js';
import type { SegmentIo } from './segment-io.js';
import { copyOutDone } from './copy-out.js';
import { ThinBatcher } from './thin-batch.js';
import { CowBatcher } from './cow-batch.js';
import { fold, listAlternates } from './partial.js';
import type { Disk, Store } from './store.js';

/** The disk locks (Attachments owns them): every table flow of a disk runs under its disk's lock. */
export interface DiskLocks {
  readonly locks: KeyedMutex<number>;
  withDisk<T>(diskId: number, fn: () => Promise<T>): Promise<T>;
  /** Takes a disk's grants back under its lock, held by the caller (Grants.revokeLocked). */
  reclaimGrants(disk: Disk): Promise<number>;
}

export class FaultPolicy {
  /**
   * Ranges whose writes wait (operator No-write through disk.states): diskId -> [first, count][]. A copy
   * of the store's, which persists them: after a restart a held segment must still hold, not copy on write.
   */
  private holds = new Map<number, Array<[number, number]>>();
  /** Group commit of first writes into thin segments (made on the first such fault: it needs the SegmentIo). */
  thin: ThinBatcher | undefined;
  /** Group commit of redirect-on-write faults (made on the first such fault, like `thin`). */
  cow: CowBatcher | undefined;

  private readonly hosts: Hosts;
  /** Whether a host has a credential (asked for every holder of every batch). */
  private readonly remote: TableCache<string, boolean>;

  constructor(private readonly store: Store, private readonly client: AgentClient, private readonly disks: DiskLocks,
    private readonly log: (m: string) => void) {
    this.hosts = new Hosts(store.db);
    this.remote = new TableCache(store.db, ['hosts'], (r) => r);
  }

  /** Any credential, even a revoked one: that host's agent may still be up until its lease runs out. */
  isRemote(hostId: string): Promise<boolean> {
    return this.remote.get(hostId, async () => (await this.hosts.get(hostId)) !== undefined);
  }

  /** Reads the persisted holds; the controller calls it before it serves any fault. */
  async loadHolds(): Promise<void> {
    this.holds = await this.store.tables.holds();
  }

  /**
   * A map fault from the agent on `from`. A changed mapping is pushed to every other holder before the answer
   * goes out: once the writer's write completes, a read on any host must find it, not a stale entry. A
   * copy-out first moves every other sharer's agents to the copy (outside this disk's lock: it takes theirs).
   */
  async fault(from: Connection, disk: Disk, f: FaultRequest, io: SegmentIo): Promise<FaultAnswer> {
    // The first write into a thin segment (the agent saw exactly Zero): grouped with its disk's others.
    if (f.op === FAULT_WRITE && f.states === STATE_ZERO) {
      this.thin ??= new ThinBatcher(this.store, io, this.disks.locks, {
        isHeld: (id, segment) => this.isHeld(id, segment),
        pushEntries: (d, items) => this.pushEntries(d, items),
        pushAhead: (d, first, entries) => this.pushAhead(d, first, entries),
        isRemote: (hostId) => this.isRemote(hostId),
        single: (c, d, req) => this.faultOne(c, d, req, io),
        reclaimGrants: (d) => this.disks.reclaimGrants(d),
        hasGrants: async (id) => (await this.store.db.get('SELECT 1 FROM grants WHERE disk_id = ? LIMIT 1', [id])) !== undefined,
      }, this.store.allocAheadBytes);
      return this.thin.fault(from, disk, f);
    }
    // A write into a plain shared segment of a redirect-on-write disk, one that copies (or, whole, takes a
    // new segment): grouped too. Bitmap disks' partial writes go to alternates, one by one.
    if (f.op === FAULT_WRITE && (f.states & (STATE_NO_WRITE | STATE_ALTERNATE)) === STATE_NO_WRITE && disk.cow === 'redirect' &&
      (disk.partial !== 'bitmap' || (f.offset === 0 && f.length === disk.segmentSize))) {
      this.cow ??= new CowBatcher(this.store, io, this.disks.locks, {
        isHeld: (id, segment) => this.isHeld(id, segment),
        pushEntries: (d, items) => this.pushEntries(d, items),
        single: (c, d, req) => this.faultOne(c, d, req, io),
        isRemote: (hostId) => this.isRemote(hostId),
      });
      return this.cow.fault(from, disk, f);
    }
    return this.faultOne(from, disk, f, io);
  }

  private async faultOne(from: Connection, disk: Disk, f: FaultRequest, io: SegmentIo): Promise<FaultAnswer> {
    let outcome = await this.disks.locks.run(disk.id, async () => {
      const o = await answerFault(this.store, io, disk, f, this.isHeld(disk.id, f.segment));
      if (!o.copyOut) await this.pushAnswer(from, disk, f.segment, o.answer);
      return o;
    });
    if (outcome.copyOut) {
      for (const id of outcome.copyOut) {
        const other = await this.store.diskById(id);
        if (other) await this.disks.withDisk(other.id, () => this.client.pushStored(other, f.segment, true));
      }
      outcome = await this.disks.locks.run(disk.id, async () => {
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
    await new Promise((resolve) => setImmediate(resolve)); // earlier replies first (see Attachments.withDisk)
    await this.client.toHolders(disk, async (conn) => {
      if (conn !== from) await this.client.sendEntry(conn, disk, segment, answer.entry, answer.alternate, answer.reclaimed === true);
    });
  }

  /**
   * New mappings of a batch of faults to every holder, each but to the agent that faulted it (the entries
   * sent concurrently per holder: a batch's pushes cost one round of messages, not one per fault).
   */
  private async pushEntries(disk: Disk, items: Array<{ from: Connection; segment: number; entry: Entry }>): Promise<void> {
    await new Promise((resolve) => setImmediate(resolve)); // earlier replies first (see Attachments.withDisk)
    await this.client.toHolders(disk, async (conn) => {
      await Promise.all(items.filter((it) => it.from !== conn).map((it) => this.client.sendEntry(conn, disk, it.segment, it.entry, undefined, false)));
    });
  }

  /**
   * Entries mapped ahead of a sequential writer, to every holder. Not blocking: the segments were Zero and
   * their new storage reads as zeros, so a request planned with either entry reads the same bytes.
   */
  private async pushAhead(disk: Disk, first: number, entries: Entry[]): Promise<void> {
    const bytes = Buffer.alloc(entries.length * ENTRY_BYTES);
    entries.forEach((e, i) => encodeEntry(bytes, i, e));
    await this.client.pushEncoded(disk, first, bytes, false);
  }

  /**
   * Folds an Alternate segment into a plain private one and pushes it with the blocking flag: afterwards no
   * request planned with the old entry is in flight, so its slot and the shared segment may be reused.
   */
  async fold(disk: Disk, segment: number, io: SegmentIo): Promise<boolean> {
    return this.disks.withDisk(disk.id, () => this.foldLocked(disk, segment, io));
  }

  async foldLocked(disk: Disk, segment: number, io: SegmentIo): Promise<boolean> {
    const entry = await fold(this.store, disk, segment, (from, to, ranges) => io.copyRanges(from, to, ranges));
    if (!entry) return false;
    const bytes = Buffer.alloc(ENTRY_BYTES);
    encodeEntry(bytes, 0, entry);
    await this.client.pushEncoded(disk, segment, bytes);
    return true;
  }

  /** Folds every Alternate segment of the disk (on request, and before a snapshot shares its table). */
  async foldAll(disk: Disk, io: SegmentIo, progress?: ProgressFn): Promise<number> {
    return this.disks.withDisk(disk.id, () => this.foldAllLocked(disk, io, progress));
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
    return this.disks.withDisk(disk.id, async () => {
      // Tables are shared whole segment by segment: alternates fold first (new ones need a fault, i.e. this lock).
      await this.foldAllLocked(disk, io);
      await this.client.pushStates(disk, 0, disk.segments, STATE_NO_WRITE, true);
      const snap = await this.store.cow.snapshot(diskName, snapName);
      failpoint('snapshot.committed');
      return snap;
    });
  }

  /** Sets or clears state bits over a range, persistently and then on every holder with the blocking flag. */
  async changeStates(disk: Disk, first: number, count: number, bits: number, set: boolean): Promise<void> {
    await this.disks.withDisk(disk.id, async () => {
      // An operator's No-write holds writes (rather than copying them away) until it is cleared.
      // Clearing drops every hold the cleared range overlaps.
      const list = this.holds.get(disk.id) ?? [];
      const holds: Array<[number, number]> = !(bits & STATE_NO_WRITE) ? list
        : set ? [...list, [first, count]] : list.filter(([f, n]) => f + n <= first || f >= first + count);
      await this.store.tables.updateEntriesAndHolds(disk, first, count, (e) => ({ ...e, states: set ? e.states | bits : e.states & ~bits }), holds);
      this.holds.set(disk.id, holds);
      await this.client.pushStates(disk, first, count, bits, set);
      for (const [f, n] of list.filter((h) => !holds.includes(h))) await this.client.cancelDelays(disk, f, n); // holds that ended
    });
  }
}
