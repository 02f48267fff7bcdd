// The controller's answer to a map fault and the alternate-location record it may carry: wire types that
// both sides use (the protocol owns them; the controller imports nothing from the agent).
import type { Entry } from '../table/mapping-table.js';

export type FaultAnswer =
  // allocated: the mapping changed (allocation, copy-on-write, reclaim), so other holders got it first;
  // reclaimed: storage was released, so they drained their I/O to it (blocking) before the answer.
  | { action: 'entry'; entry: Entry; allocated?: boolean; reclaimed?: boolean; alternate?: Alternate }
  | { action: 'error'; errno: number; setError?: boolean }
  | { action: 'delay'; ms: number };

/** An alternate location record (the entry names its slot); installed before the entry that names it. */
export interface Alternate { slot: number; container: number; offset: number; bitmap: Buffer }
