// `vdisk check`: the controller's invariants, recomputed from the tables. Every allocated segment is
// referenced, every reference has an allocation, a shared segment has no exclusive (writable, not No-write)
// owner and is shared at one index only, within one family (sharing.ts relies on both), every Alternate
// entry has its alternate and no alternate lacks its entry, every mapping lies inside a known container, no
// free extent is in use, and no two containers are the same storage.
import { LOCATION_UNIT, STATE_ALTERNATE, STATE_NO_WRITE } from '../table/mapping-table.js';
import { CHUNK_ENTRIES, ENTRY_BYTES, decodeEntry } from '../table/entry-codec.js';
import { turn } from '../util/sleep.js';
import { isMapped, type Store } from './store.js';
import { listAlternates } from './partial.js';
import { overlaps, tryIdentify } from './container-identity.js';

export interface CheckReport { ok: boolean; disks: number; allocations: number; references: number; problems: string[] }

export async function checkStore(store: Store): Promise<CheckReport> {
  const problems: string[] = [];
  const refs = new Map<string, { count: number; exclusive: string[]; indexes: Set<number>; families: Set<number> }>();
  let family = 0;
  const reference = (container: number, offset: number, index: number, writer: string | null) => {
    references++;
    const key = `${container}/${offset / LOCATION_UNIT}`;
    const r = refs.get(key) ?? { count: 0, exclusive: [], indexes: new Set<number>(), families: new Set<number>() };
    r.count++;
    r.indexes.add(index);
    r.families.add(family);
    if (writer !== null) r.exclusive.push(writer);
    refs.set(key, r);
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
  for (const d of disks) {
    family = d.family;
    const alts = new Map((await listAlternates(store, d.id)).map((a) => [a.segment, a]));
    // Stored chunks only (an absent chunk is all fill state, which maps nothing), one turn of the event loop
    // each: check costs what the tables hold and never stalls faults and pings.
    for (const chunk of await store.storedChunks(d)) {
      const data = await store.chunk(d, chunk);
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
        reference(e.container, e.offset, i, e.states & (STATE_NO_WRITE | STATE_ALTERNATE) ? null : `${d.name}[${i}]`);
        if (e.states & STATE_ALTERNATE) {
          if (!alt) problems.push(`${d.name}[${i}] is Alternate but has no alternate location`);
          else if (alt.slot !== e.alt) problems.push(`${d.name}[${i}] names alternate slot ${e.alt}, the store has ${alt.slot}`);
          if (alt) {
            placed(`${d.name}[${i}] (alternate)`, alt.container, alt.offset, d.segmentSize);
            reference(alt.container, alt.offset, i, `${d.name}[${i}] (alternate)`);
          }
        } else if (alt) {
          problems.push(`${d.name}[${i}] has an alternate location but is not Alternate`);
        }
      }
      await turn();
    }
    for (const i of alts.keys()) {
      problems.push(i < d.segments ? `${d.name}[${i}] has an alternate location but no mapping` : `${d.name} has an alternate location for segment ${i}, outside the disk`);
    }
  }
  // Reserved segments (allocations.pending) belong to a flow in progress and are named by no table yet.
  const allocs = await store.db.all<{ container_id: number; unit: number; units: number }>('SELECT * FROM allocations WHERE pending = 0');
  const seen = new Set<string>();
  for (const a of allocs) {
    const key = `${a.container_id}/${a.unit}`;
    seen.add(key);
    const r = refs.get(key);
    if (!r) problems.push(`segment ${key} is allocated but no table references it`);
  }
  for (const [key, r] of refs) {
    if (!seen.has(key)) problems.push(`segment ${key} is referenced ${r.count} time(s) but not allocated`);
    if (r.count > 1 && r.exclusive.length > 0) problems.push(`segment ${key} is shared ${r.count} ways but ${r.exclusive.join(', ')} may write it (no No-write)`);
    if (r.indexes.size > 1) problems.push(`segment ${key} is referenced at different indexes (${[...r.indexes].join(', ')})`);
    if (r.families.size > 1) problems.push(`segment ${key} is referenced by disks of different families`);
  }
  const free = await store.db.all<{ container_id: number; unit: number; units: number }>('SELECT * FROM free_extents');
  for (const f of free) {
    if (seen.has(`${f.container_id}/${f.unit}`)) problems.push(`segment ${f.container_id}/${f.unit} is both free and allocated`);
  }
  problems.push(...await containerOverlaps(store));
  return { ok: problems.length === 0, disks: disks.length, allocations: allocs.length, references, problems };
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
