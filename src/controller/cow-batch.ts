// Group commit for copy-on-write faults: writes of one disk into shared (No-write) segments that arrive while
// its lock is busy wait together; when the lock comes free they are served as one batch
// (store.cow.copyOnWriteMany: one reservation, the copies with one fdatasync per container, one durable commit
// that remaps them all), instead of two commits, a copy and an fdatasync each under the lock. A segment that
// every waiting write covers whole needs no copy: it gets zeroed storage (fresh from the zeroed frontier, or
// zeroed here). Every answer goes out after the commit that maps its segment; as for first writes into thin
// segments, that commit has no fsync of its own unless a holder is on another machine (thin-batch.ts): the
// copies are durable before it, and a remap a power cut takes back only loses writes nobody flushed.
import type { Connection } from '../protocol/connection.js';
import type { FaultAnswer } from '../protocol/fault-answer.js';
import type { Entry } from '../table/mapping-table.js';
import type { KeyedMutex } from '../util/mutex.js';
import { turn } from '../util/sleep.js';
import { lazyCommitAllowed, settleBatch, type Waiting } from './batch-settle.js';
import { copyOutsPending } from './copy-out.js';
import type { FaultRequest } from './faults.js';
import type { SegmentIo } from './segment-io.js';
import type { Disk, Store } from './store.js';

export interface CowBatchHooks {
  /** A held (No-write by the operator) segment: its writes wait, they do not copy. */
  isHeld(diskId: number, segment: number): boolean;
  /** Sends new mappings to the disk's holders, each but to its faulting agent; the caller holds the disk's lock. */
  pushEntries(disk: Disk, items: Array<{ from: Connection; segment: number; entry: Entry }>): Promise<void>;
  /** The one-fault path, for every fault the batch does not settle (it takes the lock itself). */
  single(from: Connection, disk: Disk, f: FaultRequest): Promise<FaultAnswer>;
  /** Whether a host is on another machine (see lazyCommitAllowed). */
  isRemote(hostId: string): Promise<boolean>;
}

export class CowBatcher {
  private readonly waiting = new Map<number, Waiting[]>();
  /** Batches that remapped something, and the faults they settled: what tests observe. */
  readonly stats = { batches: 0, faults: 0 };

  constructor(private readonly store: Store, private readonly io: SegmentIo, private readonly locks: KeyedMutex<number>,
    private readonly hooks: CowBatchHooks) {}

  /** Answers a write fault on a shared segment of a redirect-on-write disk, in the next batch of its disk. */
  fault(from: Connection, disk: Disk, f: FaultRequest): Promise<FaultAnswer> {
    return new Promise((resolve, reject) => {
      let list = this.waiting.get(disk.id);
      if (!list) {
        this.waiting.set(disk.id, (list = []));
        // The first fault of a batch queues for the lock; the ones arriving meanwhile join it.
        void this.locks.run(disk.id, () => this.run(disk)).catch(() => {});
      }
      list.push({ from, f, resolve, reject });
    });
  }

  private async run(disk: Disk): Promise<void> {
    await turn(); // earlier replies first (see Attachments.withDisk)
    const batch = this.waiting.get(disk.id) ?? [];
    this.waiting.delete(disk.id);
    // A pending copy-out or a hold is the one-fault path's to answer.
    const pending = await copyOutsPending(this.store, disk.id);
    const eligible = disk.readOnly ? [] : batch.filter((w) => Number.isInteger(w.f.segment) && w.f.segment >= 0 &&
      w.f.segment < disk.segments && !pending.has(w.f.segment) && !this.hooks.isHeld(disk.id, w.f.segment));
    let mapped = new Map<number, { entry: Entry; remapped: boolean }>();
    if (eligible.length > 0) {
      const size = disk.segmentSize;
      const durable = !await lazyCommitAllowed(await this.store.attachments({ diskId: disk.id }), (h) => this.hooks.isRemote(h));
      const partly = new Set(eligible.filter((w) => w.f.offset !== 0 || w.f.length !== size).map((w) => w.f.segment));
      try {
        mapped = await this.store.cow.copyOnWriteMany(disk, eligible.map((w) => w.f.segment), async (items) => {
          // Overwritten entirely: nothing to keep, and storage from the zeroed frontier reads as zeros already.
          const copies = items.filter((i) => partly.has(i.segment));
          await this.io.copyMany(copies, size);
          await this.io.zeroMany(items.filter((i) => !partly.has(i.segment) && !i.to.fresh).map((i) => i.to), size);
        }, { durable });
      } catch {
        mapped = new Map(); // ENOSPC, a failed copy: each fault finds its own answer below
      }
    }
    this.stats.faults += (await settleBatch(disk, batch, (s) => {
      const m = mapped.get(s);
      return m && { entry: m.entry, fresh: m.remapped };
    }, this.hooks)).answered;
    if (mapped.size > 0) this.stats.batches++;
  }
}
