// The hot path: a piscina task that owns one ublk queue for the device's lifetime (the kernel binds a queue
// to the thread that fetched it). Loop: one native run() submits the previous batch's plan and waits for the
// next batch of requests; each request is translated through the shared table into plan records. No
// per-request allocation, message or N-API call. The task returns only when the device is stopped.
import { receiveMessageOnPort, type MessagePort } from 'node:worker_threads';
import * as abi from '../native/abi.js';
import { addon } from '../native/addon.js';
import { MappingTable, STATE_NO_WRITE, STATE_ZERO } from '../table/mapping-table.js';
import { DEFERRED, FAULTED, SYNC, Translator, genReached } from '../io/translator.js';
import { ClaimRing } from '../io/claim-ring.js';
import { FAULT_WRITE } from '../protocol/fault-ops.js';
import { IO_DISCARDS, IO_ERRORS, IO_FAULTS, IO_FLUSHES, IO_READS, IO_WRITES, IoCounter } from './io-stats.js';

/**
 * Words of the per-device control block shared by the main thread and every queue worker. Blocking commands
 * use epochs: the main thread changes the table, increments CTL_EPOCH and wakes the workers; a worker stores
 * the epoch into its CTL_DRAINED + qId word once no request it planned under an earlier epoch is still in
 * flight. Requests are stamped with the epoch read before they were translated, so a request that raced
 * the change counts as old: the barrier may wait a little longer, never too little.
 */
export const CTL_QUIT = 0;
export const CTL_EPOCH = 1;
/**
 * The char device gate of a recovery: 0 while closed, fd + 1 once opened, -1 to give up. A recovering device
 * starts its workers before START_USER_RECOVERY and opens /dev/ublkcN after it; the workers wait here, so
 * the window between that START and the FETCHes (where a killed server leaves a device 6.12 refuses to START
 * again) holds no thread start or module load.
 */
export const CTL_CDEV = 2;
export const CTL_DRAINED = 3;
export const ctlWords = (queues: number) => CTL_DRAINED + queues;

/**
 * Epochs live in Int32 words and wrap after 2^31 barriers: the target a barrier waits for is computed in
 * the same 32-bit arithmetic as the word (Atomics.add returns the old value, unwrapped + 1 would be 2^31
 * where the word holds -2^31), and "reached" is a wrapping difference, valid while fewer than 2^31
 * barriers separate the two.
 */
export function epochAfter(previous: number): number {
  return (previous + 1) | 0;
}

export const epochReached = genReached; // the same wrapping comparison as the sync words'

export interface QueueTaskArgs {
  devId: number;
  qId: number;
  depth: number;
  maxIoBufBytes: number;
  encoded: boolean;
  /** The open /dev/ublkcN, or -1: wait at CTL_CDEV for it (a recovery). */
  cdevFd: number;
  wakeFd: number;
  table: SharedArrayBuffer;
  segments: number;
  segmentSize: number;
  sectors: number;
  containerFds: SharedArrayBuffer;
  /** The device's dirty-container bitmap (see Translator): which containers a FLUSH must fdatasync. */
  dirty: SharedArrayBuffer;
  /** The disk's sync words (Translator's SYNC_*), when its controller commits mappings lazily. */
  sync?: SharedArrayBuffer;
  /** The disk's granted segments (ClaimRing), with sync: first writes into Zero entries claim from it. */
  claims?: SharedArrayBuffer;
  control: SharedArrayBuffer;
  /** The device's I/O counters (io-stats.ts); this queue writes row qId. */
  ioStats: SharedArrayBuffer;
  port: MessagePort;
  /** Park requests the table cannot serve and report them (true), or fail them with EIO at once (false). */
  faults: boolean;
}

export interface QueueTaskResult {
  qId: number;
  requests: number;
  batches: number;
  faults: number;
  lastError: number;
}

/** Messages a queue worker posts to its device (a fault is one message per parked request: faults are rare). */
export type QueueMessage =
  | { type: 'prepared'; qId: number } // waiting at CTL_CDEV
  | { type: 'fetched'; qId: number }
  | { type: 'error'; qId: number; message: string }
  | { type: 'fault'; qId: number; tag: number; op: number; segment: number; states: number; offset: number; length: number }
  // Where a sequential writer's next window should start (Translator.aheadHint): about one per window.
  | { type: 'ahead'; qId: number; segment: number; from: number }
  // FLUSHes or FUA writes of this queue wait for mappings up to generation `gen` to be durable: one message
  // per generation asked for, however many requests wait on it.
  | { type: 'sync'; qId: number; gen: number }
  // A request failed in its container (one message per failed request: failures are rare).
  | { type: 'ioerror'; qId: number; sector: number; sectors: number; errno: number }
  // First writes of the batch claimed granted segments (one message per such batch: the main thread sends the
  // claims on and tops the ring up).
  | { type: 'claimed'; qId: number };

/** Messages the device posts to a worker; each is followed by a wake of the worker's eventfd. */
export type DeviceMessage =
  | { type: 'resolved'; segment: number; result: number } // 0: the table now serves it, retry; < 0: fail with -errno
  | { type: 'failParked'; errno: number } // the device is stopping: nobody will answer the faults
  | { type: 'synced'; gen: number; result: number }; // mappings up to gen are durable (0), or -errno: fail the waiters

export default function serveQueue(args: QueueTaskArgs): QueueTaskResult {
  const native = addon();
  const table = new MappingTable(args.table, { segments: args.segments, segmentSize: args.segmentSize });
  const containerFds = new Int32Array(args.containerFds);
  // One view of the dirty bitmap, the Translator's and the claims' (ClaimRing marks a claimed grant's container).
  const dirtyBits = new Int32Array(args.dirty);
  // Room for every request at its per-tag budget, plus one FLUSH reaching every container there can be.
  const tr = new Translator(table, containerFds, dirtyBits, args.sectors,
    args.depth * abi.MAX_OPS_PER_TAG + containerFds.length, containerFds.length);
  tr.reclaimWholeSegments = args.faults;
  const syncWords = args.sync ? new Int32Array(args.sync) : undefined;
  if (syncWords) tr.syncWords = syncWords;
  const ring = args.claims ? new ClaimRing(args.claims) : undefined;
  const ready = new Uint32Array(args.depth * abi.READY_STRIDE);
  const completed = new Uint32Array(args.depth);
  const status = new Int32Array(abi.STATUS_LEN);
  const ctl = new Int32Array(args.control);
  let cdevFd = args.cdevFd;
  if (cdevFd < 0) {
    args.port.postMessage({ type: 'prepared', qId: args.qId } satisfies QueueMessage);
    Atomics.wait(ctl, CTL_CDEV, 0);
    cdevFd = Atomics.load(ctl, CTL_CDEV) - 1;
    if (cdevFd < 0) return { qId: args.qId, requests: 0, batches: 0, faults: 0, lastError: 0 };
  }
  const q = new native.UblkQueue({
    cdevFd, qId: args.qId, depth: args.depth, maxIoBufBytes: args.maxIoBufBytes,
    wakeFd: args.wakeFd, encoded: args.encoded, ready, plan: tr.plan, status, completed,
  });
  const result: QueueTaskResult = { qId: args.qId, requests: 0, batches: 0, faults: 0, lastError: 0 };
  const io = new IoCounter(args.ioStats, args.qId);
  // Counter field of each ublk op (READ, WRITE, FLUSH, DISCARD, WRITE_SAME, WRITE_ZEROES); bytes at field + 1.
  const opField = [IO_READS, IO_WRITES, IO_FLUSHES, IO_DISCARDS, IO_WRITES, IO_DISCARDS];
  try {
    try {
      q.fetchAll();
    } catch (err) {
      args.port.postMessage({ type: 'error', qId: args.qId, message: (err as Error).message } satisfies QueueMessage);
      throw err;
    }
    args.port.postMessage({ type: 'fetched', qId: args.qId } satisfies QueueMessage);

    const stamp = new Int32Array(args.depth); // epoch each in-flight tag was planned under
    const planned = new Uint8Array(args.depth);
    const drainedWord = CTL_DRAINED + args.qId;
    let epoch = Atomics.load(ctl, CTL_EPOCH);
    let inflight = 0;
    let old = 0; // in-flight requests planned under an epoch before `epoch`
    // Parked requests wait for the device's answer to their fault; everything else keeps flowing.
    const parkedSeg = new Int32Array(args.depth).fill(-1);
    const reqSector = new Float64Array(args.depth); // of each planned request, to name an I/O error's segments
    const reqSectors = new Uint32Array(args.depth);
    const pOpFlags = new Uint32Array(args.depth);
    const pSectors = new Uint32Array(args.depth);
    const pSector = new Float64Array(args.depth);
    let parked = 0;
    // Parked on a sync (parkedSeg SYNC_PARKED): the generation each waits for, and the last one asked for.
    const SYNC_PARKED = -2;
    const syncNeed = new Int32Array(args.depth);
    let syncAsked: number | undefined;
    // FLUSHes that found this batch's flush reserve used: planned first in the next batch, which then
    // does not wait for new requests.
    const deferred = new Int32Array(args.depth);
    let nDeferred = 0;
    let lastWakeups = 0;
    let claimed = false; // a claim in this batch: one message after it
    const track = (tag: number): void => { // the tag now has a plan that will complete
      planned[tag] = 1;
      stamp[tag] = epoch;
      inflight++;
    };
    // A copy-on-write claim's contents at the granted segment (see ClaimRing.claimCow): what the write leaves
    // of the old segment, copied, then the tag's buffer at its place. Synchronous, under the claim lock.
    const writeCow = (tag: number, inSeg: number, bytes: number, container: number, offset: number, from: { container: number; offset: number }): boolean => {
      const fd = containerFds[container];
      const fromFd = containerFds[from.container];
      if (fd === undefined || fd < 0 || (bytes < args.segmentSize && (fromFd === undefined || fromFd < 0))) return false;
      const end = inSeg + bytes;
      try {
        if (inSeg > 0) q.copy(fromFd, from.offset, fd, offset, inSeg);
        if (end < args.segmentSize) q.copy(fromFd, from.offset + end, fd, offset + end, args.segmentSize - end);
        return q.writeTag(tag, fd, bytes, offset + inSeg) === bytes;
      } catch {
        return false;
      }
    };
    const plan = (tag: number, opFlags: number, nrSectors: number, sector: number, again = false): void => {
      reqSector[tag] = sector;
      reqSectors[tag] = nrSectors;
      const outcome = tr.translate(tag, opFlags, nrSectors, sector);
      if (outcome === SYNC) {
        parkedSeg[tag] = SYNC_PARKED;
        syncNeed[tag] = tr.syncNeed;
        pOpFlags[tag] = opFlags;
        pSectors[tag] = nrSectors;
        pSector[tag] = sector;
        parked++;
        if (syncAsked === undefined || !genReached(syncAsked, tr.syncNeed)) {
          syncAsked = tr.syncNeed;
          args.port.postMessage({ type: 'sync', qId: args.qId, gen: tr.syncNeed } satisfies QueueMessage);
        }
        return;
      }
      if (outcome === DEFERRED) {
        pOpFlags[tag] = opFlags;
        pSectors[tag] = nrSectors;
        pSector[tag] = sector;
        deferred[nDeferred++] = tag;
        return;
      }
      if (outcome === FAULTED) {
        // A first write into a Zero entry takes a granted segment here, without the main thread, and is
        // planned again (the rest of a write over two segments may claim the next one).
        if (ring && syncWords && tr.faultOp === FAULT_WRITE && tr.faultStates === STATE_ZERO && ring.claim(tr.faultSegment, table, syncWords, dirtyBits)) {
          claimed = true;
          plan(tag, opFlags, nrSectors, sector);
          return;
        }
        // A write within one shared segment (not FUA: its data is written here without O_DSYNC) is copied on
        // write here too, where the grants allow it: the segment's new contents go to a granted segment
        // before the entry does (the rest of the old one copied, unless the write covers it), and the request
        // is then complete.
        const bytes = nrSectors * 512;
        if (ring && syncWords && tr.faultOp === FAULT_WRITE && tr.faultStates === STATE_NO_WRITE && tr.faultLength === bytes
          && (opFlags & abi.UBLK_IO_F_FUA) === 0
          && ring.claimCow(tr.faultSegment, bytes === args.segmentSize, table, syncWords, dirtyBits,
            (c, off, from) => writeCow(tag, tr.faultOffset, bytes, c, off, from))) {
          claimed = true;
          tr.succeed(tag, bytes);
          track(tag);
          return;
        }
        // The entry changed since it was read (another queue claimed the segment, for a request on the other
        // half of it or the same write split): planned once more against it, not sent as a fault. That fault
        // would cost a hop to the main thread only to be answered "planned again", and while it is out no
        // queue claims its segment.
        if (!again && table.load(tr.faultSegment) !== tr.faultStates) {
          plan(tag, opFlags, nrSectors, sector, true);
          return;
        }
        result.faults++;
        if (!args.faults) {
          tr.fail(tag, abi.EIO); // no controller in this mode: a request the table cannot serve fails
        } else {
          parkedSeg[tag] = tr.faultSegment;
          pOpFlags[tag] = opFlags;
          pSectors[tag] = nrSectors;
          pSector[tag] = sector;
          parked++;
          args.port.postMessage({ type: 'fault', qId: args.qId, tag, op: tr.faultOp, segment: tr.faultSegment, states: tr.faultStates, offset: tr.faultOffset, length: tr.faultLength } satisfies QueueMessage);
          return;
        }
      } else if (args.faults && (opFlags & 0xff) === abi.UBLK_IO_OP_WRITE) {
        const ahead = tr.aheadHint(sector, nrSectors);
        if (ahead >= 0) args.port.postMessage({ type: 'ahead', qId: args.qId, segment: ahead, from: tr.aheadFrom } satisfies QueueMessage);
      }
      track(tag);
    };
    // A parked request's answer: fail it with -res, or plan it again.
    const unpark = (tag: number, res: number): void => {
      parkedSeg[tag] = -1;
      parked--;
      if (res < 0) {
        tr.fail(tag, -res);
        track(tag);
      } else {
        plan(tag, pOpFlags[tag], pSectors[tag], pSector[tag]);
      }
    };
    const answer = (segment: number, res: number): void => {
      for (let tag = 0; tag < args.depth && parked > 0; tag++) {
        // segment -1 answers every parked request (the device is stopping)
        if (parkedSeg[tag] === -1 || (segment !== -1 && parkedSeg[tag] !== segment)) continue;
        unpark(tag, res);
      }
    };
    const synced = (gen: number, res: number): void => {
      if (syncAsked !== undefined && genReached(gen, syncAsked)) syncAsked = undefined;
      for (let tag = 0; tag < args.depth && parked > 0; tag++) {
        if (parkedSeg[tag] !== SYNC_PARKED || (res === 0 && !genReached(gen, syncNeed[tag]))) continue;
        tr.syncPassed = true; // this request's sync is done, whatever was mapped since
        unpark(tag, res);
        tr.syncPassed = false;
      }
    };
    for (;;) {
      const nOps = tr.n;
      tr.reset();
      const n = q.run(nOps, nDeferred === 0, -1, old > 0);
      result.batches++;
      result.requests += n;
      const nDone = status[abi.STATUS_COMPLETED];
      for (let k = 0; k < nDone; k++) {
        const tag = completed[k] & ~abi.COMPLETED_IO_ERROR;
        if (completed[k] & abi.COMPLETED_IO_ERROR) {
          args.port.postMessage({ type: 'ioerror', qId: args.qId, sector: reqSector[tag], sectors: reqSectors[tag], errno: abi.EIO } satisfies QueueMessage);
        }
        if (planned[tag] === 0) continue;
        planned[tag] = 0;
        inflight--;
        if (stamp[tag] !== epoch) old--;
      }
      const e = Atomics.load(ctl, CTL_EPOCH);
      if (e !== epoch) {
        epoch = e;
        old = inflight;
      }
      if (old === 0 && Atomics.load(ctl, drainedWord) !== epoch) {
        Atomics.store(ctl, drainedWord, epoch);
        Atomics.notify(ctl, drainedWord);
      }
      if (status[abi.STATUS_WAKEUPS] !== lastWakeups) {
        lastWakeups = status[abi.STATUS_WAKEUPS];
        for (let m = receiveMessageOnPort(args.port); m !== undefined; m = receiveMessageOnPort(args.port)) {
          const msg = m.message as DeviceMessage;
          if (msg.type === 'resolved') answer(msg.segment, msg.result);
          else if (msg.type === 'synced') synced(msg.gen, msg.result);
          else answer(-1, -msg.errno);
        }
      }
      // Earlier arrivals first; a deferred FLUSH that finds the reserve used again goes back on the list
      // (at an index this loop has passed).
      const m = nDeferred;
      nDeferred = 0;
      for (let k = 0; k < m; k++) plan(deferred[k], pOpFlags[deferred[k]], pSectors[deferred[k]], pSector[deferred[k]]);
      for (let i = 0; i < n; i++) {
        const r = i * abi.READY_STRIDE;
        const opFlags = ready[r + abi.READY_OP_FLAGS];
        const field = opField[opFlags & 0xff];
        if (field !== undefined) {
          io.local[field]++;
          if (field !== IO_FLUSHES) io.local[field + 1] += ready[r + abi.READY_NR_SECTORS] * 512;
        }
        plan(ready[r + abi.READY_TAG], opFlags, ready[r + abi.READY_NR_SECTORS],
          ready[r + abi.READY_SECTOR_LO] + ready[r + abi.READY_SECTOR_HI] * 0x100000000);
      }
      if (claimed) {
        claimed = false;
        args.port.postMessage({ type: 'claimed', qId: args.qId } satisfies QueueMessage);
      }
      // Counts published once per batch; errors are the native count of requests committed with an error.
      if (n > 0 || nDone > 0) {
        io.local[IO_ERRORS] = status[abi.STATUS_FAILED];
        io.local[IO_FAULTS] = result.faults;
        io.publish();
      }
      if (n === 0 && tr.n === 0) {
        const idle = status[abi.STATUS_OWNED] === 0 && status[abi.STATUS_INFLIGHT] === 0;
        if (idle && (status[abi.STATUS_IN_KERNEL] === 0 || Atomics.load(ctl, CTL_QUIT) !== 0)) break;
      }
    }
  } finally {
    result.lastError = status[abi.STATUS_LAST_ERROR];
    q.close();
    args.port.close();
  }
  return result;
}
