// Group commit for the commonest fault: the first write into a thin (Zero) segment. Such faults of one disk
// that arrive while its lock is busy wait together; when the lock comes free they are allocated as one batch
// (store.alloc.allocateSegments: one transaction to reserve, one zeroing pass with one fdatasync per container,
// one transaction to map), so concurrent first writes share the commits instead of queueing for one each.
// Every answer goes out after the commit that maps its segment. That commit has no fsync of its own when every
// holder of the disk runs on this machine (dm-thin's rule): the agent asks for disk.sync before a FLUSH or
// FUA write completes. A holder on another machine could outlive a power cut here and keep writing into
// storage the controller no longer knows it gave away, so then the commit is durable. A batch that
// continues a sequential writer also maps the writer's next window (alloc-ahead.ts) in the same commit.
import type { VdiskError } from '../errors.js';
import type { Connection } from '../protocol/connection.js';
import type { FaultAnswer } from '../protocol/fault-answer.js';
import type { Entry } from '../table/mapping-table.js';
import type { KeyedMutex } from '../util/mutex.js';
import { runsOf } from '../util/runs.js';
import { turn } from '../util/sleep.js';
import { AllocAhead } from './alloc-ahead.js';
import { lazyCommitAllowed, settleBatch, type Waiting } from './batch-settle.js';
import { copyOutsPending } from './copy-out.js';
import type { FaultRequest } from './faults.js';
import { sameEntry } from './segment-alloc.js';
import type { SegmentIo } from './segment-io.js';
import type { Disk, Store } from './store.js';

/** An ahead hint waiting for its disk's next batch: resolves with the segments that batch mapped ahead. */
interface Hint { segment: number; writer: number; resolve: (mapped: number) => void }

export interface ThinBatchHooks {
  /** A held (No-write by the operator) segment: its writes are not allocated here. */
  isHeld(diskId: number, segment: number): boolean;
  /** Sends new mappings to the disk's holders, each but to its faulting agent; the caller holds the disk's lock. */
  pushEntries(disk: Disk, items: Array<{ from: Connection; segment: number; entry: Entry }>): Promise<void>;
  /** Sends entries mapped ahead (contiguous from `first`) to every holder, the faulting agents included. */
  pushAhead(disk: Disk, first: number, entries: Entry[]): Promise<void>;
  /** Whether a host is on another machine (see lazyCommitAllowed). */
  isRemote(hostId: string): Promise<boolean>;
  /** The one-fault path, for every fault the batch does not settle (it takes the lock itself). */
  single(from: Connection, disk: Disk, f: FaultRequest): Promise<FaultAnswer>;
  /** Takes the disk's grants back (the caller holds its lock); returns how many segments that freed. */
  reclaimGrants(disk: Disk): Promise<number>;
  /** Whether any host holds grants on the disk (so it may have claims the store does not know of). */
  hasGrants(diskId: number): Promise<boolean>;
}

export class ThinBatcher {
  private readonly waiting = new Map<number, Waiting[]>();
  private readonly hints = new Map<number, Hint[]>();
  /**
   * Batches run and faults settled by them, and ahead hints that mapped a window: what tests observe to
   * know faults were grouped or a writer's next window was mapped before it faulted.
   */
  readonly stats = { batches: 0, faults: 0, windowHits: 0, hints: 0 };
  readonly ahead: AllocAhead;
  /**
   * Per disk, the last two windows mapped ahead, by segment. A sequential writer's requests already in
   * flight when its window was mapped fault on segments of it: they are answered from here, in the next
   * batch, instead of one by one through the one-fault path.
   */
  private readonly windows = new Map<number, Array<Map<number, Entry>>>();

  constructor(private readonly store: Store, private readonly io: SegmentIo, private readonly locks: KeyedMutex<number>,
    private readonly hooks: ThinBatchHooks, aheadBytes?: number) {
    this.ahead = new AllocAhead(aheadBytes);
  }

  /** Answers a write fault the agent saw on a Zero entry, in the next batch of its disk. */
  fault(from: Connection, disk: Disk, f: FaultRequest): Promise<FaultAnswer> {
    return new Promise((resolve, reject) => {
      this.join(disk);
      this.waiting.get(disk.id)!.push({ from, f, resolve, reject });
    });
  }

  /**
   * An agent's ahead hint: a sequential writer at segment `writer` will soon reach Zero segment `segment`.
   * If that continues a stream the writer has reached the last window of (AllocAhead.continues), the next
   * batch maps a window from `segment` on, pushed to every holder; else it is declined at once (0), without
   * the lock. Nothing waits on it, so the window commits and is pushed while the writer writes.
   */
  hint(disk: Disk, segment: number, writer: number): Promise<number> {
    if (disk.readOnly || !this.ahead.continues(disk.id, disk.segmentSize, segment, writer)) return Promise.resolve(0);
    return new Promise((resolve) => {
      this.join(disk);
      this.hints.get(disk.id)!.push({ segment, writer, resolve });
    });
  }

  /** The first fault or hint of a batch queues for the lock; the ones arriving meanwhile join it. */
  private join(disk: Disk): void {
    if (this.waiting.has(disk.id)) return;
    this.waiting.set(disk.id, []);
    this.hints.set(disk.id, []);
    void this.locks.run(disk.id, () => this.run(disk)).catch(() => {});
  }

  /**
   * Answers the faults on segments a recent window mapped, if the segment still has exactly that entry
   * (so no snapshot shared it since: that sets No-write) and no copy-out is pending on it; returns the rest.
   * The window's entries went to every holder before the batch that mapped them answered, so nothing is
   * pushed. Runs under the disk's lock: the committed entries cannot change meanwhile.
   */
  private async settleInWindows(disk: Disk, batch: Waiting[]): Promise<Waiting[]> {
    const wins = this.windows.get(disk.id);
    const inWindow = (s: number) => wins?.find((m) => m.has(s))?.get(s);
    const hits = batch.filter((w) => inWindow(w.f.segment) !== undefined);
    if (hits.length === 0) return batch;
    const segs = hits.map((w) => w.f.segment);
    const first = Math.min(...segs);
    const now = await this.store.tables.getEntries(disk, first, Math.max(...segs) - first + 1);
    const pending = await copyOutsPending(this.store, disk.id);
    const rest: Waiting[] = [];
    for (const w of batch) {
      const e = inWindow(w.f.segment);
      const cur = e && now[w.f.segment - first];
      if (e && cur && sameEntry(cur, e) && !pending.has(w.f.segment)) {
        w.resolve({ action: 'entry', entry: cur, allocated: false });
        this.stats.windowHits++;
      } else {
        rest.push(w);
      }
    }
    return rest;
  }

  private async run(disk: Disk): Promise<void> {
    await turn(); // earlier replies first (see Attachments.withDisk)
    const waiting = this.waiting.get(disk.id) ?? [];
    const hints = this.hints.get(disk.id) ?? [];
    this.waiting.delete(disk.id);
    this.hints.delete(disk.id);
    const batch = await this.settleInWindows(disk, waiting);
    const usable = (s: number) => Number.isInteger(s) && s >= 0 && s < disk.segments && !this.hooks.isHeld(disk.id, s);
    const eligible = disk.readOnly ? [] : batch.filter((w) => usable(w.f.segment));
    // Ahead only for a disk one host holds. With two, one could write into a window its push reached while
    // the other still has Zero there and would read zeros after the write completed. (Its holders are
    // stable here: attach and detach take this lock.)
    const holders = await this.store.attachments({ diskId: disk.id });
    // Nothing ahead for a disk with grants either: its holder may have claimed a Zero segment the store does
    // not know of yet, and a window pushed over it would take its data away (grants serve sequential writers).
    const sole = holders.length <= 1 && !await this.hooks.hasGrants(disk.id);
    const durable = !await lazyCommitAllowed(holders, (h) => this.hooks.isRemote(h));
    // Checked again: a batch since the hint arrived may have moved its stream on.
    const hinted = !sole ? [] : hints.filter((h) => usable(h.segment) && this.ahead.continues(disk.id, disk.segmentSize, h.segment, h.writer))
      .map((h) => h.segment);
    let mapped = new Map<number, Entry>();
    let ahead: number[] = [];
    if (eligible.length > 0 || hinted.length > 0) {
      const segments = [...new Set(eligible.map((w) => w.f.segment))].sort((a, b) => a - b);
      const starts = [...new Set([...eligible.filter((w) => w.f.offset === 0).map((w) => w.f.segment), ...hinted])].sort((a, b) => a - b);
      // A hinted segment starts the window it asked for; nobody waits on it, so it is mapped ahead too.
      const faulting = new Set(segments);
      ahead = !sole ? [] : [...new Set([...hinted.filter((s) => !faulting.has(s)), ...this.ahead.plan(disk.id, disk.segmentSize, disk.segments, starts)])]
        .filter((s) => !this.hooks.isHeld(disk.id, s)).sort((a, b) => a - b);
      const zero = (locs: Entry[], length: number) => this.io.zeroMany(locs, length);
      // Short of space while the disk's holder sits on grants: they are this disk's own storage, taken back
      // (the holder's claims applied first) so that its faults can have it.
      const allocate = async (list: number[]) => {
        try {
          return await this.store.alloc.allocateSegments(disk, list, zero, { durable });
        } catch (err) {
          if ((err as VdiskError).code !== 'ENOSPC' || await this.hooks.reclaimGrants(disk) === 0) throw err;
          return this.store.alloc.allocateSegments(disk, list, zero, { durable });
        }
      };
      try {
        mapped = await allocate([...segments, ...ahead]);
      } catch {
        // No room for the window too (ENOSPC reserves nothing): the faulting segments alone. Anything else
        // (a failed zeroing): each fault finds its own answer below.
        try {
          mapped = ahead.length && segments.length ? await allocate(segments) : new Map();
        } catch {
          mapped = new Map();
        }
        ahead = [];
      }
      // Only what this batch mapped: a window segment that was not Zero any more is absent.
      ahead = ahead.filter((s) => mapped.has(s));
      this.ahead.mapped(disk.id, starts.filter((s) => mapped.has(s) && !ahead.includes(s)), ahead);
      if (ahead.length) this.windows.set(disk.id, [new Map(ahead.map((s) => [s, mapped.get(s)!])), ...(this.windows.get(disk.id) ?? []).slice(0, 1)]);
    }
    // Committed: the other holders get the new entries and the windows, then the writers their answers.
    const pushAhead = async () => {
      for (const run of runsOf(ahead)) await this.hooks.pushAhead(disk, run[0]!, run.map((s) => mapped.get(s)!));
    };
    const { answered, pushed } = await settleBatch(disk, batch, (s) => {
      const entry = mapped.get(s);
      return entry && { entry, fresh: true };
    }, this.hooks, pushAhead);
    this.stats.faults += answered;
    if (pushed && ahead.length && hinted.length) this.stats.hints++;
    for (const h of hints) h.resolve(hinted.includes(h.segment) ? ahead.length : 0);
    if (mapped.size > 0) this.stats.batches++;
  }
}
