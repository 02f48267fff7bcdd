// The I/O counters of one served disk on one host (and its delayed faults and grant pool), as agents report
// them in agent.status and the controller shows them in `vdisk stats` and on /metrics. Counted by the queue
// workers (ublk/io-stats.ts) since the agent process began serving the device: a restarted agent starts again
// from zero (a Prometheus counter reset).
export interface IoCounts {
  reads: number; readBytes: number; writes: number; writeBytes: number;
  /** Discards and write-zeroes. */
  discards: number; discardBytes: number; flushes: number;
  /** Requests completed with an error (container I/O errors, Error segments, faults answered with an error). */
  errors: number;
  /** Requests that faulted to the controller. */
  faults: number;
}

/**
 * A disk's delayed faults on one host (the controller's 'delay' answer for a held segment): parked now, and
 * since the agent began, how many delays the controller's fault.cancel ended and how many ran out.
 */
export interface DelayCounts { parked: number; cancelled: number; expired: number }

/** A disk's grant pool on its agent: grants held, the pool's size, claims made and unconfirmed, requests sent, writes that found it empty. */
export interface GrantPoolStats { held: number; target: number; claims: number; unconfirmed: number; requests: number; empty: number }

export const IO_COUNT_NAMES: ReadonlyArray<keyof IoCounts> =
  ['reads', 'readBytes', 'writes', 'writeBytes', 'discards', 'discardBytes', 'flushes', 'errors', 'faults'];

const DELAY_COUNT_NAMES: ReadonlyArray<keyof DelayCounts> = ['parked', 'cancelled', 'expired'];

const GRANT_STAT_NAMES: ReadonlyArray<keyof GrantPoolStats> = ['held', 'target', 'claims', 'unconfirmed', 'requests', 'empty'];

/** The named fields of a peer's object, each one `ok`; undefined if the object or any field is not. */
function fields<K extends string>(v: unknown, names: ReadonlyArray<K>, ok: (n: unknown) => n is number): Record<K, number> | undefined {
  if (typeof v !== 'object' || v === null) return undefined;
  const o = v as Record<string, unknown>;
  const out = {} as Record<K, number>;
  for (const k of names) {
    const n = o[k];
    if (!ok(n)) return undefined;
    out[k] = n;
  }
  return out;
}

/** Validates an agent's counters (a peer's value): every field a non-negative number, or undefined if not. */
export function parseIoCounts(v: unknown): IoCounts | undefined {
  return fields(v, IO_COUNT_NAMES, (n): n is number => typeof n === 'number' && Number.isFinite(n) && n >= 0);
}

/** Validates an agent's delay counts (a peer's value): every field a non-negative integer, or undefined if not. */
export function parseDelayCounts(v: unknown): DelayCounts | undefined {
  return fields(v, DELAY_COUNT_NAMES, (n): n is number => typeof n === 'number' && Number.isInteger(n) && n >= 0);
}

/** Validates a disk's grant pool figures (a peer's value): every field a non-negative safe integer, or undefined if not. */
export function parseGrantStats(v: unknown): GrantPoolStats | undefined {
  return fields(v, GRANT_STAT_NAMES, (n): n is number => typeof n === 'number' && Number.isSafeInteger(n) && n >= 0);
}
