// The end of a fault batch, shared by the thin (thin-batch.ts) and copy-on-write (cow-batch.ts) batchers:
// once the batch's commit is durable, the other holders get the new entries, then the writers their
// answers; every fault the batch did not settle goes down the one-fault path after the lock is released.
import type { Connection } from '../protocol/connection.js';
import type { FaultAnswer } from '../protocol/fault-answer.js';
import type { Entry } from '../table/mapping-table.js';
import type { FaultRequest } from './faults.js';
import type { Attachment, Disk } from './store.js';

/** A fault waiting for its disk's next batch. */
export interface Waiting { from: Connection; f: FaultRequest; resolve: (a: FaultAnswer) => void; reject: (err: unknown) => void }

/** What a batch committed for one segment: its entry, and whether it is new (pushed, and `allocated`). */
export interface Settled { entry: Entry; fresh: boolean }

/**
 * Whether a batch of this disk may commit without its own fsync (made durable by Db.sync before the next FLUSH
 * or FUA write completes, see thin-batch.ts): only while no holder is a host on another machine, whose agent
 * could outlive a power cut here and keep writing into storage the controller no longer knows it gave.
 * Called under the disk's lock, which attach and detach take: the holders cannot change meanwhile.
 */
export async function lazyCommitAllowed(holders: Attachment[], isRemote: (hostId: string) => Promise<boolean>): Promise<boolean> {
  for (const h of holders) if (await isRemote(h.hostId)) return false;
  return true;
}

export interface SettleHooks {
  /** Sends new mappings to the disk's holders, each but to its faulting agent; the caller holds the disk's lock. */
  pushEntries(disk: Disk, items: Array<{ from: Connection; segment: number; entry: Entry }>): Promise<void>;
  /** The one-fault path, for every fault the batch does not settle (it takes the lock itself). */
  single(from: Connection, disk: Disk, f: FaultRequest): Promise<FaultAnswer>;
  /** Whether a host is on another machine (it has a credential: its agent reaches the controller over TLS). */
  isRemote(hostId: string): Promise<boolean>;
}

/**
 * Answers the batch's faults on segments `committed` has, after pushing each new entry once (and whatever
 * `alsoPush` sends, before any answer); hands the rest to the one-fault path on a later turn. Returns how
 * many faults it answered, and whether the pushes went out: if one failed, those faults are rejected (their
 * agents resend).
 */
export async function settleBatch(disk: Disk, batch: Waiting[], committed: (segment: number) => Settled | undefined,
  hooks: SettleHooks, alsoPush?: () => Promise<void>): Promise<{ answered: number; pushed: boolean }> {
  const rest: Waiting[] = [];
  const settled: Array<[Waiting, Settled]> = [];
  const items: Array<{ from: Connection; segment: number; entry: Entry }> = [];
  const seen = new Set<number>();
  for (const w of batch) {
    const m = committed(w.f.segment);
    if (!m) {
      rest.push(w);
      continue;
    }
    settled.push([w, m]);
    if (m.fresh && !seen.has(w.f.segment)) items.push({ from: w.from, segment: w.f.segment, entry: m.entry });
    seen.add(w.f.segment);
  }
  let pushed = false;
  try {
    if (items.length) await hooks.pushEntries(disk, items);
    if (alsoPush) await alsoPush();
    for (const [w, m] of settled) w.resolve({ action: 'entry', entry: m.entry, allocated: m.fresh });
    pushed = true;
  } catch (err) {
    for (const [w] of settled) w.reject(err);
  }
  // Not settled here (not Zero or shared any more, held, read-only, out of range, no space): the one-fault
  // path, after this lock is released.
  for (const w of rest) setImmediate(() => { hooks.single(w.from, disk, w.f).then(w.resolve, w.reject); });
  return { answered: pushed ? settled.length : 0, pushed };
}
