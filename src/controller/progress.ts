// Progress of a long controller operation (rm, check, fold, migrate), sent to the CLI that asked for it as
// `progress` events on its own connection. Throttled to about ten a second, the last report always sent, so a
// large table costs a handful of events, not one per chunk.
import type { Connection } from '../protocol/connection.js';
import { PROGRESS_EVENT, type ProgressEvent } from '../protocol/progress.js';

/** Work done so far out of total, in `unit`s (segments, alternates, disks). */
export type ProgressFn = (done: number, total: number) => void | Promise<void>;

const INTERVAL_MS = 100;

/** A reporter for `op` that sends events on `conn`, or undefined when the caller did not ask for progress. */
export function progressTo(conn: Connection, wanted: boolean, op: string, unit: string): ProgressFn | undefined {
  if (!wanted) return undefined;
  let last = 0;
  return (done, total) => {
    const now = Date.now();
    if (done < total && now - last < INTERVAL_MS) return;
    last = now;
    // Dropped once the connection has closed: the caller went away, the work carries on.
    conn.sendEvent(PROGRESS_EVENT, { op, unit, done, total } satisfies ProgressEvent);
  };
}
