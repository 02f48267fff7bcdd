// Answers map faults. The answer is computed from the store under the disk's lock: a thin (Zero) segment
// that is written gets a new segment, reserved, zeroed and fdatasync'ed, and only then mapped (store.alloc.staged),
// so the mapping commits only once the segment reads as zeros; a write to a shared (No-write) segment gets a
// private copy (redirect-on-write) the same way. The answer goes out after the commit. Everything else is
// answered with the stored entry (an agent that restarted or lost its lease reloads this way).
import { VdiskError } from '../errors.js';
import { FAULT_DISCARD, FAULT_RECLAIM, FAULT_WRITE } from '../protocol/fault-ops.js';
import * as abi from '../native/abi.js';
import {
  STATE_ALTERNATE, STATE_ERROR, STATE_INVALID, STATE_NO_WRITE, STATE_ZERO, type Entry,
} from '../table/mapping-table.js';
import type { FaultAnswer } from '../protocol/fault-answer.js';
import type { Disk, Store } from './store.js';
import { copyOut, copyOutPending } from './copy-out.js';
import { FOLD_FRACTION, alternateOf, fold, writeToAlternate, type Location } from './partial.js';
import type { SegmentIo } from './segment-io.js';
import type { Allocated } from './allocator.js';

/**
 * How long an agent parks a write to a held segment before asking again. The controller cancels the delay
 * (fault.cancel) the moment the hold ends, and an agent that loses its link ends its delays itself, so this
 * is only the bound for a cancel that never came; it is the most an agent accepts (agent-ops.ts).
 */
export const HOLD_DELAY_MS = 60_000;
const ENOSPC = 28;
const EROFS = 30;

/** A fault as the agent reports it: the operation, the segment, the states that stopped it, and the piece. */
export interface FaultRequest { op: number; segment: number; states: number; offset: number; length: number }

/** The answer, and what the controller must do around it (see FaultPolicy.fault). */
export interface Outcome {
  answer: FaultAnswer;
  /** The segment's alternate holds enough blocks to fold it in the background. */
  foldSoon?: boolean;
  /** A copy-out is pending: these disks' agents must map the copy before the writer gets its answer. */
  copyOut?: number[];
}

/** The answer to one fault; the caller holds the disk's lock and sends the answer before releasing it. */
export async function answerFault(store: Store, io: SegmentIo, disk: Disk, f: FaultRequest, held: boolean): Promise<Outcome> {
  const { op, segment } = f;
  if (!Number.isInteger(segment) || segment < 0 || segment >= disk.segments) {
    throw new VdiskError(`segment ${segment} is outside disk ${disk.name} (${disk.segments} segments)`, { code: 'ERANGE' });
  }
  const offset = Number.isInteger(f.offset) && f.offset >= 0 && f.offset < disk.segmentSize ? f.offset : 0;
  const length = Number.isInteger(f.length) && f.length > 0 && offset + f.length <= disk.segmentSize ? f.length : disk.segmentSize - offset;
  let [entry] = await store.tables.getEntries(disk, segment, 1);
  const plain = (e: Entry): Promise<Outcome> => withAlternate(store, disk, segment, e);
  if (entry.states & STATE_ERROR) return plain(entry); // the agent installs E: the I/O fails with EIO
  if (entry.states & STATE_INVALID) return { answer: { action: 'error', errno: abi.EIO } };
  const writing = op === FAULT_WRITE || op === FAULT_DISCARD || op === FAULT_RECLAIM;
  if (writing && disk.readOnly) return { answer: { action: 'error', errno: EROFS } }; // the device refuses writes first; never allocate for one
  if (writing && held) return { answer: { action: 'delay', ms: HOLD_DELAY_MS } }; // held No-write (operator, migration)
  const pending = await copyOutPending(store, disk.id, segment);
  if (pending) return { ...(await plain(entry)), copyOut: pending }; // not known to be pushed yet (a crash, or a racing fault)
  return guardSpace(async () => {
    if (op === FAULT_RECLAIM) {
      if (entry.states & STATE_ZERO) return plain(entry);
      return { answer: { action: 'entry', entry: await store.cow.reclaimSegment(disk, segment), allocated: true, reclaimed: true } };
    }
    if (op === FAULT_WRITE && entry.states & STATE_ZERO) {
      entry = await store.alloc.allocateSegment(disk, segment, (e: Entry, len: number) => io.zero(e.container, e.offset, len));
      return { answer: { action: 'entry', entry, allocated: true } };
    }
    if (entry.states & STATE_ALTERNATE && f.states & STATE_ALTERNATE && (op !== FAULT_WRITE || entry.states & STATE_NO_WRITE)) {
      // A read too fragmented for one request, or a partial discard: the segment becomes plain and private.
      // Storage was released (the shared segment's reference), so other holders drain first ("reclaimed").
      const folded = await fold(store, disk, segment, (from, to, ranges) => io.copyRanges(from, to, ranges));
      return { answer: { action: 'entry', entry: folded ?? entry, allocated: folded !== null, reclaimed: folded !== null } };
    }
    if (op === FAULT_WRITE && (entry.states & (STATE_NO_WRITE | STATE_ALTERNATE))) return copyOnWrite(store, io, disk, segment, entry, offset, length);
    if (writing && entry.states & STATE_NO_WRITE) {
      // A discard of part of a shared segment: the disk needs its own copy first (then it discards in it).
      const r = await store.cow.copyOnWrite(disk, segment, (from, to, len) => io.copy(from, to, len));
      return { answer: { action: 'entry', entry: r.entry, allocated: r.remapped } };
    }
    return plain(entry);
  });
}

/**
 * A write to a shared or Alternate segment. Copy-out moves the other sharers; otherwise a write of the
 * whole segment gets a fresh (zeroed) one with no copy, a partial write of a `--partial bitmap` disk moves
 * just its blocks to the alternate, and anything else copies the segment (redirect-on-write).
 */
async function copyOnWrite(store: Store, io: SegmentIo, disk: Disk, segment: number, entry: Entry, offset: number, length: number): Promise<Outcome> {
  const copyRanges = (from: Location, to: Location, ranges: Array<[number, number]>) => io.copyRanges(from, to, ranges);
  if (entry.states & STATE_ALTERNATE || (disk.partial === 'bitmap' && disk.cow === 'redirect' && length < disk.segmentSize)) {
    const w = await writeToAlternate(store, disk, segment, offset, length, copyRanges);
    if (w) {
      return { answer: { action: 'entry', entry: w.entry, allocated: true, alternate: w.alternate }, foldSoon: w.blocks >= w.total * FOLD_FRACTION };
    }
    // Every alternate slot is taken: copy the whole segment instead.
  }
  if (disk.cow === 'copy-out') {
    const r = await copyOut(store, disk, segment, (from, to, len) => io.copy(from, to, len));
    return { answer: { action: 'entry', entry: r?.entry ?? entry, allocated: true }, copyOut: r?.moved.length ? r.moved : undefined };
  }
  const whole = length === disk.segmentSize;
  const r = await store.cow.copyOnWrite(disk, segment, whole
    // Overwritten entirely: nothing to keep, and storage from the zeroed frontier reads as zeros already.
    ? (_from, to, len) => ((to as Allocated).fresh ? Promise.resolve() : io.zero(to.container, to.offset, len))
    : (from, to, len) => io.copy(from, to, len));
  return { answer: { action: 'entry', entry: r.entry, allocated: r.remapped } };
}

/** The stored entry as an answer, with its alternate location when it has one. */
async function withAlternate(store: Store, disk: Disk, segment: number, entry: Entry): Promise<Outcome> {
  if (!(entry.states & STATE_ALTERNATE)) return { answer: { action: 'entry', entry } };
  const a = await alternateOf(store, disk.id, segment);
  return { answer: { action: 'entry', entry, alternate: a } };
}

/** Out of space is an answer for this write (ENOSPC to the host), not a controller failure. */
async function guardSpace(fn: () => Promise<Outcome>): Promise<Outcome> {
  try {
    return await fn();
  } catch (err) {
    if ((err as VdiskError).code === 'ENOSPC') return { answer: { action: 'error', errno: ENOSPC } };
    throw err;
  }
}
