// How a disk copies on write, chosen per disk at create or clone time (stored in disks.cow_mode and
// disks.partial_mode). Kept apart from the store so the CLI can check the options without loading SQLite.
import { VdiskError } from '../errors.js';

/** The writer gets a new segment (redirect) or the other sharers get the copy (copy-out). */
export type CowMode = 'redirect' | 'copy-out';
/** A partial write to a shared segment moves just its blocks to an alternate location (bitmap), or copies the segment (copy). */
export type PartialMode = 'bitmap' | 'copy';
export const COW_MODES: readonly CowMode[] = ['redirect', 'copy-out'];
export const PARTIAL_MODES: readonly PartialMode[] = ['bitmap', 'copy'];

export interface Modes { cow?: CowMode; partial?: PartialMode }

/** The controller's own check of a request's modes (the CLI checks its options in cli/base.ts). */
export function checkModes(m: Modes): void {
  if (m.cow !== undefined && !COW_MODES.includes(m.cow)) throw new VdiskError(`--cow must be ${COW_MODES.join(' or ')}, not ${String(m.cow)}`, { code: 'EINVAL' });
  if (m.partial !== undefined && !PARTIAL_MODES.includes(m.partial)) throw new VdiskError(`--partial must be ${PARTIAL_MODES.join(' or ')}, not ${String(m.partial)}`, { code: 'EINVAL' });
}
