// The hot path: a piscina task that owns one ublk queue for the device's lifetime (the kernel binds a queue
// to the thread that fetched it). Loop: one native run() submits the previous batch's plan and waits for the
// next batch of requests; each request is translated through the shared table into plan records. No
// per-request allocation, message or N-API call. The task returns only when the device is stopped.
import type { MessagePort } from 'node:worker_threads';
import * as abi from '../native/abi.js';
import { addon } from '../native/addon.js';
import { MappingTable } from '../table/mapping-table.js';
import { FAULTED, Translator } from '../io/translator.js';

/**
 * Words of the per-device control block shared by the main thread and every queue worker. Blocking commands
 * use epochs: the main thread changes the table, increments CTL_EPOCH and wakes the workers; a worker stores
 * the epoch into its CTL_DRAINED + qId word once no request it planned under an earlier epoch is still in
 * flight. Requests are stamped with the epoch read before they were translated, so a request that raced
 * the change counts as old: the barrier may wait a little longer, never too little.
 */
export const CTL_QUIT = 0;
export const CTL_EPOCH = 1;
export const CTL_DRAINED = 2;
export const ctlWords = (queues: number) => CTL_DRAINED + queues;

export interface QueueTaskArgs {
  devId: number;
  qId: number;
  depth: number;
  maxIoBufBytes: number;
  encoded: boolean;
  cdevFd: number;
  wakeFd: number;
  table: SharedArrayBuffer;
  segments: number;
  segmentSize: number;
  sectors: number;
  containerFds: SharedArrayBuffer;
  flushFds: number[];
  control: SharedArrayBuffer;
  port: MessagePort;
}

export interface QueueTaskResult {
  qId: number;
  requests: number;
  batches: number;
  faults: number;
  lastError: number;
}

/** Messages a queue worker posts to its device. */
export type QueueMessage = { type: 'fetched'; qId: number } | { type: 'error'; qId: number; message: string };

const EIO = 5;

export default function serveQueue(args: QueueTaskArgs): QueueTaskResult {
  const native = addon();
  const table = new MappingTable(args.table, { segments: args.segments, segmentSize: args.segmentSize });
  const tr = new Translator(table, new Int32Array(args.containerFds), Int32Array.from(args.flushFds), args.sectors,
    args.depth * abi.MAX_OPS_PER_TAG);
  const ready = new Uint32Array(args.depth * abi.READY_STRIDE);
  const completed = new Uint32Array(args.depth);
  const status = new Int32Array(abi.STATUS_LEN);
  const ctl = new Int32Array(args.control);
  const q = new native.UblkQueue({
    cdevFd: args.cdevFd, qId: args.qId, depth: args.depth, maxIoBufBytes: args.maxIoBufBytes,
    wakeFd: args.wakeFd, encoded: args.encoded, ready, plan: tr.plan, status, completed,
  });
  const result: QueueTaskResult = { qId: args.qId, requests: 0, batches: 0, faults: 0, lastError: 0 };
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
    for (;;) {
      const nOps = tr.n;
      tr.n = 0;
      const n = q.run(nOps, true, -1, old > 0);
      result.batches++;
      result.requests += n;
      const nDone = status[abi.STATUS_COMPLETED];
      for (let k = 0; k < nDone; k++) {
        const tag = completed[k];
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
      for (let i = 0; i < n; i++) {
        const r = i * abi.READY_STRIDE;
        const tag = ready[r + abi.READY_TAG];
        const sector = ready[r + abi.READY_SECTOR_LO] + ready[r + abi.READY_SECTOR_HI] * 0x100000000;
        if (tr.translate(tag, ready[r + abi.READY_OP_FLAGS], ready[r + abi.READY_NR_SECTORS], sector) === FAULTED) {
          // No controller in this mode: a request the table cannot serve fails rather than waits.
          result.faults++;
          tr.fail(tag, EIO);
        }
        planned[tag] = 1;
        stamp[tag] = epoch;
        inflight++;
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
