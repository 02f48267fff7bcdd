// Per-device I/O counters shared by the queue workers and the agent's main thread. Each queue owns one row
// (one writer, so no atomic adds): the worker counts in plain locals and publishes them into its row once per
// batch under a sequence word (odd while it writes), so a reader on the main thread never sees a torn row and
// the hot path pays a few stores per batch, nothing per request.
import type { IoCounts } from '../protocol/io-counts.js';

export const IO_READS = 0;
export const IO_READ_BYTES = 1;
export const IO_WRITES = 2;
export const IO_WRITE_BYTES = 3;
export const IO_DISCARDS = 4; // discards and write-zeroes
export const IO_DISCARD_BYTES = 5;
export const IO_FLUSHES = 6;
export const IO_ERRORS = 7; // requests completed with an error (container I/O errors, Error segments, failed faults)
export const IO_FAULTS = 8; // requests that faulted to the controller
export const IO_FIELDS = 9;

export type { IoCounts } from '../protocol/io-counts.js';

/** Row `q` of a stats block: [sequence word, IO_FIELDS counters]. Float64 so byte counts do not wrap. */
const ROW = IO_FIELDS + 1;

export function ioStatsBuffer(queues: number): SharedArrayBuffer {
  return new SharedArrayBuffer(queues * ROW * 8);
}

/** The writer's side, owned by queue `q`'s worker thread. */
export class IoCounter {
  readonly local = new Float64Array(IO_FIELDS);
  private readonly seq: Int32Array;
  private readonly row: Float64Array;

  constructor(buf: SharedArrayBuffer, q: number) {
    // The sequence word lives in the row's first 8 bytes (an Int32 view of them), the counters after it.
    this.seq = new Int32Array(buf, q * ROW * 8, 1);
    this.row = new Float64Array(buf, (q * ROW + 1) * 8, IO_FIELDS);
  }

  /** Once per batch with anything to count: copies the locals into the shared row between two sequence bumps. */
  publish(): void {
    Atomics.add(this.seq, 0, 1); // odd: a write is in progress
    this.row.set(this.local);
    Atomics.add(this.seq, 0, 1); // even again: the row is whole
  }
}

/** The reader's side: the sum over every queue's row, each read whole (retried while its writer is mid-update). */
export function readIoStats(buf: SharedArrayBuffer, queues: number): IoCounts {
  const sum = new Float64Array(IO_FIELDS);
  const copy = new Float64Array(IO_FIELDS);
  for (let q = 0; q < queues; q++) {
    const seq = new Int32Array(buf, q * ROW * 8, 1);
    const row = new Float64Array(buf, (q * ROW + 1) * 8, IO_FIELDS);
    for (;;) {
      const before = Atomics.load(seq, 0);
      if (before & 1) continue; // the writer is between its two bumps: a few stores away
      copy.set(row);
      if (Atomics.load(seq, 0) === before) break;
    }
    for (let f = 0; f < IO_FIELDS; f++) sum[f] += copy[f];
  }
  return {
    reads: sum[IO_READS], readBytes: sum[IO_READ_BYTES], writes: sum[IO_WRITES], writeBytes: sum[IO_WRITE_BYTES],
    discards: sum[IO_DISCARDS], discardBytes: sum[IO_DISCARD_BYTES], flushes: sum[IO_FLUSHES], errors: sum[IO_ERRORS], faults: sum[IO_FAULTS],
  };
}
