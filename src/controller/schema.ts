// Versioned schema of the controller's database. Each migration runs once, in a transaction, and bumps
// PRAGMA user_version; a database newer than this code is refused rather than guessed at.
import { VdiskError } from '../errors.js';
import type { Db } from './db.js';

const MIGRATIONS: string[] = [
  // 1: containers, disks, tables as BLOB chunks, allocations, agents and attachments.
  `CREATE TABLE containers (
     id INTEGER PRIMARY KEY,
     name TEXT NOT NULL UNIQUE,
     path TEXT NOT NULL,
     size INTEGER NOT NULL,
     next_unit INTEGER NOT NULL DEFAULT 0,   -- bump allocator, in 64 KiB units
     failed INTEGER NOT NULL DEFAULT 0,
     created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ'))
   );
   CREATE TABLE free_extents (             -- freed segments, reused by segments of the same size
     container_id INTEGER NOT NULL REFERENCES containers(id),
     unit INTEGER NOT NULL,
     units INTEGER NOT NULL,
     PRIMARY KEY (container_id, units, unit)
   ) WITHOUT ROWID;
   CREATE TABLE disks (
     id INTEGER PRIMARY KEY,
     name TEXT NOT NULL UNIQUE,
     size INTEGER NOT NULL,
     segment_size INTEGER NOT NULL,
     fill_states INTEGER NOT NULL,           -- state of entries whose chunk is absent (Zero for thin disks)
     container_id INTEGER REFERENCES containers(id),  -- preferred container, or NULL for any
     created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ'))
   );
   CREATE TABLE table_chunks (             -- CHUNK_ENTRIES entries of 16 bytes, the agents' in-memory layout
     disk_id INTEGER NOT NULL REFERENCES disks(id) ON DELETE CASCADE,
     chunk INTEGER NOT NULL,
     data BLOB NOT NULL,
     PRIMARY KEY (disk_id, chunk)
   ) WITHOUT ROWID;
   CREATE TABLE allocations (
     container_id INTEGER NOT NULL REFERENCES containers(id),
     unit INTEGER NOT NULL,
     units INTEGER NOT NULL,
     refcount INTEGER NOT NULL CHECK (refcount > 0),
     PRIMARY KEY (container_id, unit)
   ) WITHOUT ROWID;
   CREATE TABLE agents (
     host_id TEXT PRIMARY KEY,
     last_seen TEXT
   );
   CREATE TABLE attachments (
     disk_id INTEGER NOT NULL REFERENCES disks(id),
     host_id TEXT NOT NULL REFERENCES agents(host_id),
     dev_id INTEGER,
     PRIMARY KEY (disk_id, host_id)
   ) WITHOUT ROWID;`,
  // 2: each agent's lease, so a restarted controller knows how long an agent it has not seen may still cache.
  'ALTER TABLE agents ADD COLUMN lease_ms INTEGER;',
  // 3: snapshots and clones. A snapshot is a read-only disk whose parent is its origin; a clone is a writable
  // disk whose parent is the snapshot it was made from. Shared segments carry No-write in every sharer's table.
  `ALTER TABLE disks ADD COLUMN read_only INTEGER NOT NULL DEFAULT 0;
   ALTER TABLE disks ADD COLUMN parent_id INTEGER;`,
  // 4: migrations in progress, resumed when the controller restarts.
  `CREATE TABLE migrations (
     disk_id INTEGER PRIMARY KEY REFERENCES disks(id) ON DELETE CASCADE,
     to_container INTEGER NOT NULL REFERENCES containers(id),
     started_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ'))
   );`,
  // 5: how each disk copies on write (redirect or copy-out; partial writes to an alternate location with a
  // block bitmap, or whole-segment copies), the alternates themselves, and copy-outs whose pushes to the
  // other sharers' agents are not yet known to be done (the writer must not proceed before they are).
  // Sharing is read from the tables of a disk's family (sharing.ts), so snapshots no longer count references;
  // disks from before get one family per segment size (wider than needed, never too narrow).
  `ALTER TABLE disks ADD COLUMN family_id INTEGER;
   UPDATE disks SET family_id = -segment_size;
   ALTER TABLE disks ADD COLUMN cow_mode TEXT NOT NULL DEFAULT 'redirect';
   ALTER TABLE disks ADD COLUMN partial_mode TEXT NOT NULL DEFAULT 'bitmap';
   CREATE TABLE alternates (
     disk_id INTEGER NOT NULL REFERENCES disks(id) ON DELETE CASCADE,
     segment INTEGER NOT NULL,
     slot INTEGER NOT NULL,
     container_id INTEGER NOT NULL REFERENCES containers(id),
     unit INTEGER NOT NULL,
     bitmap BLOB NOT NULL,
     PRIMARY KEY (disk_id, segment),
     UNIQUE (disk_id, slot)
   ) WITHOUT ROWID;
   CREATE TABLE copyouts (
     disk_id INTEGER NOT NULL REFERENCES disks(id) ON DELETE CASCADE,
     segment INTEGER NOT NULL,
     disks TEXT NOT NULL,                  -- JSON array of the disks whose entry moved to the copy
     PRIMARY KEY (disk_id, segment)
   ) WITHOUT ROWID;`,
  // 6: safety state that must survive a restart, and identities.
  // - allocations.pending: segments reserved by a flow whose file I/O runs between two transactions (no
  //   table names them; a restart frees them).
  // - free_extents.reusable_at: the freed-segment quarantine (ms since the epoch), so a restart cannot
  //   hand out a segment that a read planned under the old mapping may still be reading.
  // - containers.identity: what the container is (device and inode of a file, device number of a block
  //   device), so one backing store backs at most one container whatever path names it.
  // - counters: ids are never reused (an fd or a table entry cached under an old id must not reach a new
  //   container); SQLite's rowid would reuse the highest id after a removal.
  // - holds: operator No-write ranges, which hold writes instead of copying them away.
  `ALTER TABLE allocations ADD COLUMN pending INTEGER NOT NULL DEFAULT 0;
   ALTER TABLE free_extents ADD COLUMN reusable_at INTEGER NOT NULL DEFAULT 0;
   ALTER TABLE containers ADD COLUMN identity TEXT;
   CREATE UNIQUE INDEX containers_identity ON containers (identity);
   CREATE TABLE counters (name TEXT PRIMARY KEY, next INTEGER NOT NULL);
   INSERT INTO counters (name, next) SELECT 'container', COALESCE(MAX(id), 0) + 1 FROM containers;
   CREATE TABLE holds (
     disk_id INTEGER NOT NULL REFERENCES disks(id) ON DELETE CASCADE,
     first INTEGER NOT NULL,
     count INTEGER NOT NULL
   );`,
  // 7: host credentials for agents on other machines (TLS). One row per host id: the fingerprint of the one
  // certificate that is its live credential (a reissue replaces it), and when it was revoked, if it was.
  `CREATE TABLE hosts (
     host_id TEXT PRIMARY KEY,
     fingerprint TEXT NOT NULL,              -- SHA-256 of the certificate, as Node prints fingerprint256
     serial TEXT NOT NULL,
     not_after TEXT NOT NULL,
     issued_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ')),
     revoked_at TEXT
   ) WITHOUT ROWID;`,
  // 8: container labels and per-host paths.
  // - containers.uuid: the UUID in the container's on-media label (src/label), written before the add
  //   committed; allocation starts after the label. NULL: a container from before labels, which has none and
  //   keeps allocating from offset 0 (its data is there), served as before.
  // - container_paths: the path a host reaches the container by, where it differs from containers.path.
  // - label_intents: UUIDs of labels being written by an add that has not committed yet. A crash in between
  //   leaves a label no container has; its UUID here says it is this controller's own, so the storage may be
  //   added again (any other unknown label is refused: it may be another controller's container).
  `ALTER TABLE containers ADD COLUMN uuid TEXT;
   CREATE TABLE label_intents (uuid TEXT PRIMARY KEY, path TEXT NOT NULL);
   CREATE UNIQUE INDEX containers_uuid ON containers (uuid);
   CREATE TABLE container_paths (
     container_id INTEGER NOT NULL REFERENCES containers(id),
     host_id TEXT NOT NULL,
     path TEXT NOT NULL,
     PRIMARY KEY (container_id, host_id)
   ) WITHOUT ROWID;`,
  // 9: the zeroed frontier (allocator.ts): units [next_unit, zeroed_unit) read as zeros and hold nothing, so a
  //   segment taken from there needs no zeroing. 0 for every existing container: nothing is known zero until
  //   the first zero-ahead.
  'ALTER TABLE containers ADD COLUMN zeroed_unit INTEGER NOT NULL DEFAULT 0;',
  // 10: grants (grants.ts): zeroed segments given to the one host that holds a disk, ahead of its first
  //   writes. Each is a committed allocation that this table names instead of a disk's table, until the host's
  //   agent maps it itself (a claim) or it is freed (revocation, registration, detach, removal).
  `CREATE TABLE grants (
     container_id INTEGER NOT NULL REFERENCES containers(id),
     unit INTEGER NOT NULL,
     units INTEGER NOT NULL,
     disk_id INTEGER NOT NULL REFERENCES disks(id),
     host_id TEXT NOT NULL,
     PRIMARY KEY (container_id, unit)
   ) WITHOUT ROWID;
   CREATE INDEX grants_disk ON grants (disk_id, host_id);`,
];

export const SCHEMA_VERSION = MIGRATIONS.length;

export async function migrate(db: Db): Promise<void> {
  const row = await db.get<{ user_version: number }>('PRAGMA user_version');
  const current = row?.user_version ?? 0;
  if (current > SCHEMA_VERSION) {
    throw new VdiskError(`the database has schema version ${current}, newer than this vdisk (${SCHEMA_VERSION}): upgrade vdisk`, { code: 'ESCHEMA' });
  }
  for (let v = current; v < SCHEMA_VERSION; v++) {
    await db.transaction(async () => {
      await db.exec(MIGRATIONS[v]);
      await db.exec(`PRAGMA user_version = ${v + 1}`);
    });
  }
}
