// `vdisk check`: the controller's invariants, recomputed from the tables. Every allocated segment is
// referenced, every reference has an allocation, a shared segment has no exclusive (writable, not No-write)
// owner and is shared at one index only, within one family (sharing.ts relies on both), every Alternate
// entry has its alternate and no alternate lacks its entry, every mapping lies inside a known container, no
// free extent is in use, no two containers are the same storage, no container is a file of the controller's, and
// every labelled container's label is where its path says, with nothing allocated inside its reserve.
import path from 'node:path';
import { LOCATION_UNIT, STATE_ALTERNATE, STATE_NO_WRITE } from '../table/mapping-table.js';
import { CHUNK_ENTRIES, ENTRY_BYTES, decodeEntry } from '../table/entry-codec.js';
import { turn } from '../util/sleep.js';
import { isMapped, type Store } from './store.js';
import { listAlternates } from './partial.js';
import { controllerFileOf, describeControllerFile, overlaps, tryIdentify } from './container-identity.js';
import type { ProgressFn } from './progress.js';
import { LABEL_RESERVED_BYTES, labelProblem, readLabelAt } from '../label/container-label.js';

export interface CheckReport { ok: boolean; disks: number; allocations: number; references: number; problems: string[] }

/**
 * What check learns about each referenced segment, in parallel typed arrays indexed by a slot number (a big
 * pool has millions of segments: no object, string or closure per segment, so no garbage-collector pauses).
 */
class Refs {
  size = 0;
  // (container, unit window) -> unit -> slot. Windows of 2^16 units keep each Map small: growing one Map to
  // millions of entries rehashes them all in one go, a stall of tens of milliseconds.
  private readonly slots = new Map<number, Map<number, number>>();
  count = new Uint32Array(1024);
  index = new Float64Array(1024);
  otherIndex = new Float64Array(1024);
  family = new Float64Array(1024);
  /** bit 0: referenced by another family too; bit 1: allocated. */
  flags = new Uint8Array(1024);
  /** References that may write it (not No-write, not Alternate), and the first of them (disk slot, index). */
  writers = new Uint32Array(1024);
  writerDisk = new Int32Array(1024);
  writerIndex = new Float64Array(1024);
  writerAlt = new Uint8Array(1024);

  slot(container: number, unit: number): number | undefined {
    return this.slots.get(container * 65536 + Math.floor(unit / 65536))?.get(unit);
  }

  add(container: number, unit: number, index: number, family: number): number {
    const w = container * 65536 + Math.floor(unit / 65536);
    let byUnit = this.slots.get(w);
    if (!byUnit) this.slots.set(w, (byUnit = new Map()));
    let k = byUnit.get(unit);
    if (k === undefined) {
      if (this.size === this.count.length) this.grow();
      k = this.size++;
      byUnit.set(unit, k);
      this.index[k] = index;
      this.otherIndex[k] = -1;
      this.family[k] = family;
    }
    this.count[k]++;
    if (index !== this.index[k]) this.otherIndex[k] = index;
    if (family !== this.family[k]) this.flags[k] |= 1;
    return k;
  }

  *entries(): Generator<[number, number, number]> {
    for (const [w, byUnit] of this.slots) for (const [unit, k] of byUnit) yield [Math.floor(w / 65536), unit, k];
  }

  private grow(): void {
    const n = this.count.length * 2;
    const more = <T extends Uint32Array | Float64Array | Uint8Array | Int32Array>(a: T): T => {
      const b = new (a.constructor as new (n: number) => T)(n);
      b.set(a);
      return b;
    };
    this.count = more(this.count);
    this.index = more(this.index);
    this.otherIndex = more(this.otherIndex);
    this.family = more(this.family);
    this.flags = more(this.flags);
    this.writers = more(this.writers);
    this.writerDisk = more(this.writerDisk);
    this.writerIndex = more(this.writerIndex);
    this.writerAlt = more(this.writerAlt);
  }
}

/** Work between turns of the event loop, in entries or rows: a turn every few milliseconds. */
const SLICE = 4096;

/**
 * Every invariant check can recompute from the tables. It reads one snapshot of the database (Db.snapshot):
 * it yields between chunks, and a fault, migration step or rm committing meanwhile would otherwise show as a
 * leak or a missing allocation (seen under the kill-loop churn).
 */
export async function checkStore(store: Store, progress?: ProgressFn): Promise<CheckReport> {
  return store.db.snapshot(() => checkSnapshot(store, progress));
}

async function checkSnapshot(store: Store, progress?: ProgressFn): Promise<CheckReport> {
  const problems: string[] = [];
  const refs = new Refs();
  let family = 0;
  let diskSlot = 0;
  const reference = (container: number, offset: number, index: number, writes: boolean, alternate: boolean) => {
    references++;
    const k = refs.add(container, offset / LOCATION_UNIT, index, family);
    if (writes && refs.writers[k]++ === 0) {
      refs.writerDisk[k] = diskSlot;
      refs.writerIndex[k] = index;
      refs.writerAlt[k] = alternate ? 1 : 0;
    }
  };
  const disks = await store.listDisks();
  const containers = new Map((await store.listContainers()).map((c) => [c.id, c]));
  // A mapping must name a container the store knows and lie inside it, or its I/O reads someone else's bytes
  // (another container's, through a reused id) or past the end of the file.
  const placed = (what: string, container: number, offset: number, length: number) => {
    const c = containers.get(container);
    if (!c) problems.push(`${what} is mapped to container #${container}, which does not exist`);
    else if (offset + length > c.size) problems.push(`${what} lies outside container ${c.name} (${offset}+${length} > ${c.size} bytes)`);
  };
  let references = 0;
  // Progress counts table entries: the table scan is what grows with the pool.
  const total = disks.reduce((n, d) => n + d.segments, 0);
  let before = 0;
  for (const [slot, d] of disks.entries()) {
    family = d.family;
    diskSlot = slot;
    const alts = new Map((await listAlternates(store, d.id)).map((a) => [a.segment, a]));
    // Stored chunks only (an absent chunk is all fill state, which maps nothing), one turn of the event loop
    // each: check costs what the tables hold and never stalls faults and pings.
    for await (const { chunk, data } of store.tables.chunks(d)) {
      await progress?.(before + Math.min(d.segments, chunk * CHUNK_ENTRIES), total);
      for (let k = 0; k < data.length / ENTRY_BYTES; k++) {
        const i = chunk * CHUNK_ENTRIES + k;
        const e = decodeEntry(data, k);
        const alt = alts.get(i);
        alts.delete(i);
        if (!isMapped(e)) {
          if (alt) problems.push(`${d.name}[${i}] has an alternate location but no mapping`);
          continue;
        }
        placed(`${d.name}[${i}]`, e.container, e.offset, d.segmentSize);
        // An Alternate entry writes only to its alternate: its own location is read-only to it, like No-write.
        reference(e.container, e.offset, i, (e.states & (STATE_NO_WRITE | STATE_ALTERNATE)) === 0, false);
        if (e.states & STATE_ALTERNATE) {
          if (!alt) problems.push(`${d.name}[${i}] is Alternate but has no alternate location`);
          else if (alt.slot !== e.alt) problems.push(`${d.name}[${i}] names alternate slot ${e.alt}, the store has ${alt.slot}`);
          if (alt) {
            placed(`${d.name}[${i}] (alternate)`, alt.container, alt.offset, d.segmentSize);
            reference(alt.container, alt.offset, i, true, true);
          }
        } else if (alt) {
          problems.push(`${d.name}[${i}] has an alternate location but is not Alternate`);
        }
      }
    }
    before += d.segments;
    await progress?.(before, total);
    for (const i of alts.keys()) {
      problems.push(i < d.segments ? `${d.name}[${i}] has an alternate location but no mapping` : `${d.name} has an alternate location for segment ${i}, outside the disk`);
    }
  }
  // Reserved segments (allocations.pending) belong to a flow in progress and are named by no table yet;
  // granted ones (grants.ts) are named by their grant until claimed.
  // Allocations page by primary key, SLICE rows a turn.
  let allocations = 0;
  for (let after = { c: -1, u: -1 }; ;) {
    const page = await store.db.all<{ container_id: number; unit: number }>(
      `SELECT container_id, unit FROM allocations a WHERE (container_id, unit) > (?, ?) AND pending = 0
        AND NOT EXISTS (SELECT 1 FROM grants g WHERE g.container_id = a.container_id AND g.unit = a.unit) ORDER BY container_id, unit LIMIT ?`,
      [after.c, after.u, SLICE]);
    for (const a of page) {
      const k = refs.slot(a.container_id, a.unit);
      if (k !== undefined) refs.flags[k] |= 2;
      else problems.push(`segment ${a.container_id}/${a.unit} is allocated but no table references it`);
    }
    allocations += page.length;
    if (page.length < SLICE) break;
    after = { c: page[page.length - 1].container_id, u: page[page.length - 1].unit };
    await turn();
  }
  let n = 0;
  const writer = (k: number) => `${disks[refs.writerDisk[k]].name}[${refs.writerIndex[k]}]${refs.writerAlt[k] ? ' (alternate)' : ''}`;
  for (const [container, unit, k] of refs.entries()) {
    const count = refs.count[k];
    const key = `${container}/${unit}`; // (a rope: flattened only if a problem names it)
    if ((refs.flags[k] & 2) === 0) problems.push(`segment ${key} is referenced ${count} time(s) but not allocated`);
    if (count > 1 && refs.writers[k] > 0) {
      problems.push(`segment ${key} is shared ${count} ways but ${writer(k)}${refs.writers[k] > 1 ? ` and ${refs.writers[k] - 1} more` : ''} may write it (no No-write)`);
    }
    if (refs.otherIndex[k] >= 0) problems.push(`segment ${key} is referenced at different indexes (${refs.index[k]}, ${refs.otherIndex[k]})`);
    if (refs.flags[k] & 1) problems.push(`segment ${key} is referenced by disks of different families`);
    if (++n % SLICE === 0) await turn();
  }
  const both = await store.db.all<{ container_id: number; unit: number }>(
    'SELECT f.container_id, f.unit FROM free_extents f JOIN allocations a ON a.container_id = f.container_id AND a.unit = f.unit WHERE a.pending = 0');
  for (const f of both) problems.push(`segment ${f.container_id}/${f.unit} is both free and allocated`);
  const grants = await store.db.all<{ container_id: number; unit: number; disk_id: number; host_id: string; allocated: number }>(
    `SELECT g.container_id, g.unit, g.disk_id, g.host_id, a.unit IS NOT NULL AS allocated FROM grants g
     LEFT JOIN allocations a ON a.container_id = g.container_id AND a.unit = g.unit AND a.pending = 0`);
  for (const g of grants) {
    const what = `segment ${g.container_id}/${g.unit}, granted to disk ${g.disk_id} on ${g.host_id},`;
    if (!g.allocated) problems.push(`${what} is not allocated`);
    if (refs.slot(g.container_id, g.unit) !== undefined) problems.push(`${what} is also referenced by a table`);
  }
  problems.push(...await containerOverlaps(store));
  problems.push(...await controllerFiles(store));
  problems.push(...await labels(store));
  return { ok: problems.length === 0, disks: disks.length, allocations, references, problems };
}

/** Two containers whose paths name the same or overlapping storage: their disks would share bytes. */
async function containerOverlaps(store: Store): Promise<string[]> {
  const out: string[] = [];
  const cs = (await store.listContainers()).map((c) => ({ c, id: tryIdentify(c.path) }));
  for (let i = 0; i < cs.length; i++) {
    for (let j = i + 1; j < cs.length; j++) {
      const a = cs[i];
      const b = cs[j];
      if (!a.id || !b.id || !overlaps(a.id, b.id)) continue;
      out.push(`containers ${a.c.name} and ${b.c.name} are ${a.id.key === b.id.key ? 'the same storage' : 'overlapping storage'} (${a.c.path}, ${b.c.path})`);
    }
  }
  return out;
}

/**
 * Labelled containers: no segment or free extent inside the label's reserve, and the storage at the
 * controller's path holds the container's label (else the controller's own zeroing and copies refuse it).
 */
async function labels(store: Store): Promise<string[]> {
  const out: string[] = [];
  const reserve = LABEL_RESERVED_BYTES / LOCATION_UNIT;
  for (const c of await store.listContainers()) {
    if (c.uuid === null) continue;
    const inside = await store.db.get<{ n: number }>(
      'SELECT (SELECT COUNT(*) FROM allocations WHERE container_id = ? AND unit < ?) + (SELECT COUNT(*) FROM free_extents WHERE container_id = ? AND unit < ?) AS n',
      [c.id, reserve, c.id, reserve]);
    if (inside && inside.n > 0) out.push(`container ${c.name}: ${inside.n} segment(s) lie in its label's 1 MiB reserve`);
    if (c.failed) continue; // known lost: its storage need not answer
    const problem = await readLabelAt(c.path).then((b) => labelProblem(b, { uuid: c.uuid as string, size: c.size }), (err: Error) => `nothing readable (${err.message})`);
    if (problem) out.push(`container ${c.name}: ${c.path} holds ${problem}, not its label ${c.uuid}`);
  }
  return out;
}

/** Containers that are the controller's own files (recorded before `container add` refused them). */
async function controllerFiles(store: Store): Promise<string[]> {
  const dataDir = path.dirname(store.file);
  const out: string[] = [];
  for (const c of await store.listContainers()) {
    const found = controllerFileOf(dataDir, c.path);
    if (found) out.push(`container ${c.name} (${c.path}) is ${describeControllerFile(found)}: its segments overwrite the controller's state`);
  }
  return out;
}
