// How many table entries (of all disks) name a location: what a reference count would say, recomputed from
// the tables the way the controller reads sharing (src/controller/sharing.ts).
import type { Store } from '../../src/controller/store.js';
import { decodeEntry } from '../../src/table/entry-codec.js';
import { isMapped } from '../../src/controller/sharing.js';

export async function references(store: Store, at: { container: number; offset: number }): Promise<number> {
  let n = 0;
  for (const d of await store.listDisks()) {
    const table = await store.tables.readTable(d);
    for (let i = 0; i < d.segments; i++) {
      const e = decodeEntry(table, i);
      if (isMapped(e) && e.container === at.container && e.offset === at.offset) n++;
    }
  }
  return n;
}
