// `vdisk check`: the controller's invariants, recomputed from the tables. Every allocated segment is
// referenced, every reference has an allocation, reference counts equal the number of entries naming the
// segment, a shared segment has no exclusive (writable, not No-write) owner, and no free extent is in use.
import { LOCATION_UNIT, STATE_NO_WRITE } from '../table/mapping-table.js';
import { decodeEntry } from '../table/entry-codec.js';
import { isMapped, type Store } from './store.js';

export interface CheckReport { ok: boolean; disks: number; allocations: number; references: number; problems: string[] }

export async function checkStore(store: Store): Promise<CheckReport> {
  const problems: string[] = [];
  const refs = new Map<string, { count: number; exclusive: string[]; units: number }>();
  const disks = await store.listDisks();
  let references = 0;
  for (const d of disks) {
    const table = await store.readTable(d);
    for (let i = 0; i < d.segments; i++) {
      const e = decodeEntry(table, i);
      if (!isMapped(e)) continue;
      references++;
      const key = `${e.container}/${e.offset / LOCATION_UNIT}`;
      const r = refs.get(key) ?? { count: 0, exclusive: [], units: d.segmentSize / LOCATION_UNIT };
      r.count++;
      if (!(e.states & STATE_NO_WRITE)) r.exclusive.push(`${d.name}[${i}]`);
      refs.set(key, r);
    }
  }
  const allocs = await store.db.all<{ container_id: number; unit: number; units: number; refcount: number }>('SELECT * FROM allocations');
  const seen = new Set<string>();
  for (const a of allocs) {
    const key = `${a.container_id}/${a.unit}`;
    seen.add(key);
    const r = refs.get(key);
    if (!r) problems.push(`segment ${key} is allocated (refcount ${a.refcount}) but no table references it`);
    else if (r.count !== a.refcount) problems.push(`segment ${key} has refcount ${a.refcount} but ${r.count} table entries reference it`);
  }
  for (const [key, r] of refs) {
    if (!seen.has(key)) problems.push(`segment ${key} is referenced ${r.count} time(s) but not allocated`);
    if (r.count > 1 && r.exclusive.length > 0) problems.push(`segment ${key} is shared ${r.count} ways but ${r.exclusive.join(', ')} may write it (no No-write)`);
  }
  const free = await store.db.all<{ container_id: number; unit: number; units: number }>('SELECT * FROM free_extents');
  for (const f of free) {
    if (seen.has(`${f.container_id}/${f.unit}`)) problems.push(`segment ${f.container_id}/${f.unit} is both free and allocated`);
  }
  return { ok: problems.length === 0, disks: disks.length, allocations: allocs.length, references, problems };
}
