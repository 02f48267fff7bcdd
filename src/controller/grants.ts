// Grants: zeroed segments given ahead of need to the one host that holds a disk, which maps them itself at
// the disk's Zero entries (claims) instead of asking for each first write (DESIGN.md, "First writes without a
// round trip"). A grant is a committed allocation named by a `grants` row, so nothing else gets it and it reads
// as zeros until its claim. Claims reach the controller with the agent's next grant request, with disk.sync
// (before a FLUSH or FUA write completes), in answer to a revocation, with the stop of a device and at
// registration (a restarted agent reads them from its claims files). Every flow that changes a disk's table
// revokes its grants first, under the disk's lock (Attachments.withDisk): it then sees every claim.
import { VdiskError } from '../errors.js';
import { agentRequest, type Claim, type CowClaims, type DiskClaim, type GrantedSegment } from '../protocol/agent-ops.js';
import { CHUNK_ENTRIES, decodeEntry, encodeEntry } from '../table/entry-codec.js';
import { LOCATION_UNIT, STATE_NO_WRITE, STATE_ZERO, type Entry } from '../table/mapping-table.js';
import type { KeyedMutex } from '../util/mutex.js';
import { failpoint } from '../util/failpoints.js';
import type { AgentRegistry } from './agents.js';
import { lazyCommitAllowed } from './batch-settle.js';
import type { Db } from './db.js';
import { familyOf, sharedMany } from './sharing.js';
import type { Disk, Store } from './store.js';

const REVOKE_TIMEOUT_MS = 30_000;

/**
 * Frees the grants of a disk (of one host, or of all), inside the caller's transaction; returns how many. A
 * grant no claim names was never written or read, so it is reusable at once (a fault short of space may be
 * waiting for it), unless `quarantineMs` says otherwise: a refused claim's write, or a lost host's, may have
 * reached it.
 */
export async function freeGrants(db: Db, quarantineMs: number, diskId: number, hostId?: string): Promise<number> {
  const where = hostId === undefined ? 'disk_id = ?' : 'disk_id = ? AND host_id = ?';
  const params = hostId === undefined ? [diskId] : [diskId, hostId];
  const left = await db.get<{ n: number }>(`SELECT COUNT(*) AS n FROM grants WHERE ${where}`, params);
  if (!left || left.n === 0) return 0;
  await db.run(`INSERT OR REPLACE INTO free_extents (container_id, unit, units, reusable_at)
    SELECT container_id, unit, units, ? FROM grants WHERE ${where}`, [quarantineMs > 0 ? Date.now() + quarantineMs : 0, ...params]);
  await db.run(`DELETE FROM allocations WHERE (container_id, unit) IN (SELECT container_id, unit FROM grants WHERE ${where})`, params);
  await db.run(`DELETE FROM grants WHERE ${where}`, params);
  return left.n;
}

/** applied: claims mapped now or before; fresh: mapped now; refused: not mapped. */
interface Tally { applied: number; fresh: number; refused: number }

export interface GrantAnswer { grants: GrantedSegment[]; claimed: number; refused?: string; cow?: CowClaims }

export class Grants {
  /** What tests and the bench observe: segments granted, claims newly applied and refused, grants freed unclaimed. */
  readonly stats = { granted: 0, claimed: 0, refused: 0, freed: 0, revocations: 0 };

  constructor(private readonly store: Store, private readonly agents: AgentRegistry, private readonly locks: KeyedMutex<number>,
    private readonly isRemote: (hostId: string) => Promise<boolean>, private readonly log: (m: string) => void) {}

  /** disk.grant: applies the host's claims, then grants up to `want` zeroed segments, in one commit. */
  grant(disk: Disk, hostId: string, want: number, claims: Claim[]): Promise<GrantAnswer> {
    return this.locks.run(disk.id, async () => {
      const holders = await this.store.attachments({ diskId: disk.id });
      const refused = process.env.VDISK_GRANTS === '0' ? 'grants are off (VDISK_GRANTS=0)' : disk.readOnly ? 'the disk is read-only'
        : holders.length !== 1 || holders[0].hostId !== hostId ? 'the disk is not attached to this host alone'
          : !this.store.alloc.pool.zeroer ? 'no zero-ahead on this store' : undefined;
      // A grant is storage the controller no longer hands out: a remote holder could outlive a power cut here,
      // so its grants commit durably (as thin-batch's mappings do). Claims alone may be lazy (disk.sync).
      const durable = want > 0 && !refused && !await lazyCommitAllowed(holders, this.isRemote);
      const units = disk.segmentSize / LOCATION_UNIT;
      const out = await this.store.alloc.withFrontier(() => this.store.db.transaction(async () => {
        const claimed = await this.applyLocked(disk, hostId, claims);
        if (refused || want === 0) return { claimed: claimed.applied, tally: claimed, grants: [] as GrantedSegment[] };
        const pref = (await this.store.db.get<{ container_id: number | null }>('SELECT container_id FROM disks WHERE id = ?', [disk.id]))?.container_id ?? null;
        // At most a quarter of the room the disk could still get: granted storage is nobody else's, so a nearly
        // full pool keeps most of what is left for faults (of this disk's other hosts' and of other disks).
        const room = Math.floor(await this.store.alloc.freeFor(disk) / disk.segmentSize / 4);
        if (room < 1) return { claimed: claimed.applied, tally: claimed, grants: [] as GrantedSegment[], refused: 'little room left: first writes fault' };
        // One run above a bump pointer, from the zeroed frontier (the allocator refuses the transaction until
        // zero-ahead has reached it): no I/O here, and three statements for the lot.
        for (let n = Math.min(want, room); n >= 1; n = Math.floor(n / 2)) {
          const run = await this.store.alloc.pool.run(units, n, pref, false);
          if (!run) continue;
          if (!run.fresh) throw new VdiskError('a granted run must come from the zeroed frontier', { code: 'EINVAL' });
          await this.store.db.run(`WITH RECURSIVE seq(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM seq WHERE i + 1 < ?)
            INSERT INTO grants (container_id, unit, units, disk_id, host_id) SELECT ?, ? + i * ?, ?, ?, ? FROM seq`,
          [n, run.container, run.unit, units, units, disk.id, hostId]);
          const grants = Array.from({ length: n }, (_, i) => ({ container: run.container, offset: (run.unit + i * units) * LOCATION_UNIT }));
          return { claimed: claimed.applied, tally: claimed, grants };
        }
        return { claimed: claimed.applied, tally: claimed, grants: [] as GrantedSegment[], refused: 'no container has room for a run' };
      }, { durable }));
      this.tally(disk, hostId, out.tally);
      this.stats.granted += out.grants.length;
      if (out.grants.length) failpoint('grant.committed');
      const answer: GrantAnswer = { grants: out.grants, claimed: out.claimed };
      if (out.grants.length > 0 && await this.cowAllowed(disk)) answer.cow = disk.partial === 'copy' ? 'copy' : 'whole';
      const why = refused ?? out.refused;
      if (why) answer.refused = why;
      return answer;
    });
  }

  /**
   * Whether grants of this disk may serve copy-on-write claims (a write into a shared No-write entry mapped
   * at the grant by the agent, ClaimRing.claimCow: whole-segment writes, and with `--partial copy` any write
   * within a segment, the agent copying the rest); the disk's lock is held. Only where the controller's own
   * answer to that write would be the same remap: a redirect-on-write disk with no operator
   * hold (a held segment's writes wait), in a family with no copy-out member (a copy-out moves the *other*
   * sharers, this disk's entries among them, under its writer's lock, not this disk's). Each of those changes
   * revokes the grants first (withDisk; a copy-out clone: Grants.revokeFamily), so a rule given with grants
   * holds as long as they do.
   */
  private async cowAllowed(disk: Disk): Promise<boolean> {
    if (disk.readOnly || disk.cow !== 'redirect') return false;
    if (await this.store.db.get('SELECT 1 AS one FROM holds WHERE disk_id = ? LIMIT 1', [disk.id])) return false;
    return (await familyOf(this.store, disk)).every((d) => d.cow === 'redirect');
  }

  /**
   * A disk that copies out joined the family: its writes will move the other members' shared entries, which
   * their holders must no longer claim over. Takes back every other member's grants (each under its lock).
   */
  async revokeFamily(disk: Disk): Promise<void> {
    for (const other of await familyOf(this.store, disk)) {
      await this.locks.run(other.id, () => this.revokeLocked(other));
    }
  }

  /** disk.sync's part: the claims applied (lazily; the sync's durable commit covers them). */
  sync(disk: Disk, hostId: string, claims: Claim[]): Promise<number> {
    if (claims.length === 0) return Promise.resolve(0);
    return this.locks.run(disk.id, async () => {
      const t = await this.store.db.transaction(() => this.applyLocked(disk, hostId, claims), { durable: false });
      return this.tally(disk, hostId, t);
    });
  }

  /**
   * Before a flow changes the disk's table (the caller holds the disk's lock): every host with grants on it
   * answers with its unconfirmed claims and stops using them; the claims are applied and the rest freed. A
   * host that is gone is waited out (its lease): its grants are then freed, and its claims refused when it
   * comes back (they stood for writes it never flushed).
   */
  async revokeLocked(disk: Disk): Promise<number> {
    let freed = 0;
    const hosts = await this.store.db.all<{ host_id: string }>('SELECT DISTINCT host_id FROM grants WHERE disk_id = ?', [disk.id]);
    for (const { host_id: hostId } of hosts) {
      let claims: Claim[] | undefined;
      for (;;) {
        const link = await this.agents.reachableOrExpired(hostId);
        if (!link) break;
        try {
          claims = (await agentRequest(link.conn, 'grants.revoke', { diskId: disk.id }, { timeoutMs: REVOKE_TIMEOUT_MS })).claims;
          break;
        } catch (err) {
          if (link.conn.isOpen) throw err;
        }
      }
      freed += (await this.settle(disk, hostId, claims ?? [], claims === undefined)).freed;
      this.stats.revocations++;
    }
    return freed;
  }

  /** A device stopped for a detach: its last claims are applied and the host's grants on the disk freed. */
  async release(disk: Disk, hostId: string, claims: Claim[], lost = false): Promise<number> {
    return (await this.locks.run(disk.id, () => this.settle(disk, hostId, claims, lost))).applied;
  }

  /**
   * agent.register: a (re)started agent holds no grant. Its claims (its own unconfirmed ones and those of a
   * previous agent's claims files) are applied where the host still has the grant, and every grant the host
   * had is freed. Returns the claims applied.
   */
  async register(hostId: string, claims: DiskClaim[]): Promise<number> {
    const diskIds = new Set([...claims.map((c) => c.diskId),
      ...(await this.store.db.all<{ disk_id: number }>('SELECT DISTINCT disk_id FROM grants WHERE host_id = ?', [hostId])).map((r) => r.disk_id)]);
    let applied = 0;
    for (const id of diskIds) {
      const disk = await this.store.diskById(id);
      const mine = claims.filter((c) => c.diskId === id);
      if (!disk) {
        if (mine.length) this.refuse(`disk ${id} is gone`, mine.length);
        continue;
      }
      // Claims a killed agent left in its files are all here: its other grants were never written.
      applied += (await this.locks.run(id, () => this.settle(disk, hostId, mine))).applied;
    }
    return applied;
  }

  /**
   * Applies claims and frees the host's other grants on the disk, in one commit; the lock is held. `lost`: the
   * host's claims are unknown (its agent is gone), so what it was granted is quarantined like any freed segment.
   */
  private async settle(disk: Disk, hostId: string, claims: Claim[], lost = false): Promise<{ applied: number; freed: number }> {
    const { t, freed } = await this.store.db.transaction(async () => {
      const t = await this.applyLocked(disk, hostId, claims);
      const quarantine = lost || t.refused > 0 ? this.store.alloc.pool.quarantineMs : 0;
      return { t, freed: await freeGrants(this.store.db, quarantine, disk.id, hostId) };
    });
    this.stats.freed += freed;
    return { applied: this.tally(disk, hostId, t), freed };
  }

  /** Counts a committed application of claims; refusals are said loudly (the writes they stood for are lost). */
  private tally(disk: Disk, hostId: string, t: Tally): number {
    this.stats.claimed += t.fresh;
    if (t.refused) this.refuse(`${disk.name}: ${t.refused} claim(s) of ${hostId} name no grant it still has at a Zero entry`, t.refused);
    return t.applied;
  }

  /**
   * Maps each claimed segment at its Zero entry (or, for a copy-on-write claim, at its plain shared No-write
   * entry, whose old segment then loses this disk's reference), inside the caller's transaction, if the host
   * still has that grant on this disk; a claim already applied counts again (claims are resent until
   * confirmed). Any other is refused and logged: the write it stood for is lost. Returns the claims applied.
   */
  private async applyLocked(disk: Disk, hostId: string, claims: Claim[]): Promise<Tally> {
    if (claims.length === 0) return { applied: 0, fresh: 0, refused: 0 };
    const db = this.store.db;
    const rows = await db.all<{ container_id: number; unit: number }>('SELECT container_id, unit FROM grants WHERE disk_id = ? AND host_id = ?', [disk.id, hostId]);
    const granted = new Set(rows.map((r) => `${r.container_id}/${r.unit}`));
    const chunks = new Map<number, Buffer>();
    const changed = new Set<number>();
    const taken = new Map<number, number[]>(); // container -> units claimed now
    const left: Array<{ segment: number; at: Entry }> = []; // the old segments of copy-on-write claims
    let applied = 0;
    let refused = 0;
    for (const c of claims) {
      if (c.segment >= disk.segments) {
        refused++;
        continue;
      }
      const k = Math.floor(c.segment / CHUNK_ENTRIES);
      let data = chunks.get(k);
      if (!data) chunks.set(k, (data = await this.store.tables.chunk(disk, k)));
      const e = decodeEntry(data, c.segment - k * CHUNK_ENTRIES);
      if (e.states === 0 && e.container === c.container && e.offset === c.offset) {
        applied++; // sent again: counted as applied, not as new
        continue;
      }
      const key = `${c.container}/${c.offset / LOCATION_UNIT}`;
      if (e.states !== (c.cow ? STATE_NO_WRITE : STATE_ZERO) || !granted.has(key) || (c.cow && disk.cow !== 'redirect')) {
        refused++;
        continue;
      }
      granted.delete(key);
      const entry: Entry = { states: 0, container: c.container, offset: c.offset, alt: 0 };
      encodeEntry(data, c.segment - k * CHUNK_ENTRIES, entry);
      changed.add(k);
      taken.set(c.container, [...(taken.get(c.container) ?? []), c.offset / LOCATION_UNIT]);
      if (c.cow) left.push({ segment: c.segment, at: e });
      applied++;
    }
    for (const k of changed) await this.store.tables.putChunk(disk.id, k, chunks.get(k)!);
    // After the entries: a segment no other family member names any more is free (as a controller's remap
    // frees it). One look for the lot: each member's chunk is read once, not once per claim (a clone deep in
    // a chain has tens of members, and a top-up carries a hundred claims).
    if (left.length > 0) {
      const shared = await sharedMany(this.store, disk, left);
      const units = disk.segmentSize / LOCATION_UNIT;
      for (const [i, l] of left.entries()) if (!shared[i]) await this.store.alloc.free(l.at.container, l.at.offset / LOCATION_UNIT, units);
    }
    for (const [container, units] of taken) {
      await db.run('DELETE FROM grants WHERE container_id = ? AND unit IN (SELECT value FROM json_each(?))', [container, JSON.stringify(units)]);
    }
    return { applied, fresh: [...taken.values()].reduce((n, u) => n + u.length, 0), refused };
  }

  private refuse(why: string, n: number): void {
    this.stats.refused += n;
    this.log(`claims refused (writes that were never flushed are lost): ${why}`);
  }
}
