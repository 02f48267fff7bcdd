// How a disk copies on write, chosen per disk at create or clone time (stored in disks.cow_mode and
// disks.partial_mode). Kept apart from the store so the CLI can check the options without loading SQLite.

/** The writer gets a new segment (redirect) or the other sharers get the copy (copy-out). */
export type CowMode = 'redirect' | 'copy-out';
/** A partial write to a shared segment moves just its blocks to an alternate location (bitmap), or copies the segment (copy). */
export type PartialMode = 'bitmap' | 'copy';
export const COW_MODES: readonly CowMode[] = ['redirect', 'copy-out'];
export const PARTIAL_MODES: readonly PartialMode[] = ['bitmap', 'copy'];

export interface Modes { cow?: CowMode; partial?: PartialMode }
