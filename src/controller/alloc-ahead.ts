// Allocation ahead for sequential writers: which Zero segments a batch of first-write faults should map
// besides the faulting ones. Only faults of writes that start at their segment's first byte count (a
// sequential writer enters each segment there; a random 4k writer does so once in 256 segments). A writer
// whose such faults keep landing just past a run of at least MIN_RUN segments that earlier batches mapped
// for such faults (or ahead) is taken to be sequential, and a window as long as that run (so it
// doubles, up to a cap) is mapped after its faults, in the same commit: its next writes then find their
// segments mapped instead of each costing a controller round trip. Pure bookkeeping; ThinBatcher asks and
// reports, under the disk's lock.
import { runsOf } from '../util/runs.js';

/** The most one stream maps ahead of its writes, in bytes (bounds the space a stopped writer leaves mapped). */
export const AHEAD_MAX_BYTES = 64 << 20;
/** Segments mapped back to back before a writer counts as sequential (a few adjacent writes do not). */
export const MIN_RUN = 4;
/** Streams remembered per disk: enough for a few concurrent sequential writers, not a history of random ones. */
const STREAMS_PER_DISK = 16;

/**
 * A run of segments mapped back to back, ending just before the stream's key, and where the last batch that
 * mapped a window ahead in it started (its first fault, or the window; none when it mapped faults only).
 */
interface Stream { run: number; windowStart?: number }

export class AllocAhead {
  /** Per disk: the segment just past a run the last batches mapped -> the run (LRU order). */
  private readonly streams = new Map<number, Map<number, Stream>>();
  /** Segments mapped ahead so far (tests and the bench observe it). */
  readonly stats = { segments: 0 };

  /** 0 turns allocation ahead off (VDISK_ALLOC_AHEAD_MB=0). */
  constructor(readonly maxBytes = AHEAD_MAX_BYTES) {}

  /**
   * The segments to map ahead of a batch's faulting `segments` (sorted, distinct: those whose write starts
   * at the segment's first byte): for each stream of at
   * least MIN_RUN that a fault continues (it lands within the stream's length past its end), as many
   * segments as the stream is long (capped, inside the disk) after the stream's highest faulting segment.
   */
  plan(diskId: number, segmentSize: number, diskSegments: number, segments: number[]): number[] {
    const cap = Math.floor(this.maxBytes / segmentSize);
    const streams = this.streams.get(diskId);
    if (cap < 1 || !streams) return [];
    const faulting = new Set(segments);
    const out = new Set<number>();
    for (const [next, st] of streams) {
      if (st.run < MIN_RUN) continue;
      const window = Math.min(cap, st.run);
      const hits = segments.filter((s) => s >= next && s < next + window);
      if (hits.length === 0) continue;
      const from = Math.max(...hits) + 1;
      for (let s = from; s < Math.min(diskSegments, from + window); s++) if (!faulting.has(s)) out.add(s);
    }
    return [...out].sort((a, b) => a - b);
  }

  /**
   * Whether an ahead hint is worth a batch: `segment` lands where plan() would map a window (it continues a
   * stream) and the writer, at segment `writer`, has reached that stream's last window. So a writer has at
   * most the window it writes in and the next one mapped ahead of it, however often it hints.
   */
  continues(diskId: number, segmentSize: number, segment: number, writer: number): boolean {
    const cap = Math.floor(this.maxBytes / segmentSize);
    for (const [next, st] of this.streams.get(diskId) ?? []) {
      if (cap < 1 || st.run < MIN_RUN || st.windowStart === undefined) continue;
      if (segment >= next && segment < next + Math.min(cap, st.run) && writer >= st.windowStart && writer < next) return true;
    }
    return false;
  }

  /**
   * What a batch mapped for faults at a segment's start (and hints), and ahead: each contiguous run extends
   * the stream it continues, or starts one. Segments mapped for other faults are no evidence of a sequential
   * writer.
   */
  mapped(diskId: number, starts: number[], ahead: number[]): void {
    const segments = [...starts, ...ahead];
    if (this.maxBytes === 0 || segments.length === 0) return;
    this.stats.segments += ahead.length;
    const aheadSet = new Set(ahead);
    let streams = this.streams.get(diskId);
    if (!streams) this.streams.set(diskId, (streams = new Map()));
    for (const r of runsOf([...new Set(segments)].sort((a, b) => a - b))) {
      const first = r[0]!;
      const end = r[r.length - 1]! + 1;
      // A stream this run continues (its end lies within the run) ends here; its run carries over. Exactly:
      // a writer that skips segments (every other one, say) is not sequential.
      let run = end - first;
      for (const [next, st] of streams) {
        if (next >= first && next <= end) {
          run = Math.max(run, st.run + (end - next));
          streams.delete(next);
        }
      }
      streams.set(end, { run, windowStart: r.some((x) => aheadSet.has(x)) ? first : undefined });
    }
    while (streams.size > STREAMS_PER_DISK) streams.delete(streams.keys().next().value as number);
  }
}
