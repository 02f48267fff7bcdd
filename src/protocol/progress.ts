// The `progress` event of long operations: what the controller sends to a CLI connection that asked for it
// (`progress: true` among the request's arguments) while rm, check, fold or migrate runs.
export const PROGRESS_EVENT = 'progress';

/** Work done so far out of total, in `unit`s (segments, alternates). */
export interface ProgressEvent { op: string; unit: string; done: number; total: number }
