// The controller's record of host credentials (the hosts table): which certificate is each remote host's
// live credential and which were revoked. Checked at every TLS handshake, on the read-only connection, so a
// revocation that committed is seen by the next handshake.
import { VdiskError } from '../errors.js';
import type { Db } from './db.js';

export interface HostRecord {
  hostId: string;
  fingerprint: string;
  serial: string;
  notAfter: string;
  issuedAt: string;
  revokedAt: string | null;
}

interface Row { host_id: string; fingerprint: string; serial: string; not_after: string; issued_at: string; revoked_at: string | null }

const toRecord = (r: Row): HostRecord => ({
  hostId: r.host_id, fingerprint: r.fingerprint, serial: r.serial, notAfter: r.not_after, issuedAt: r.issued_at, revokedAt: r.revoked_at,
});

export class Hosts {
  constructor(private readonly db: Db) {}

  async get(hostId: string): Promise<HostRecord | undefined> {
    const r = await this.db.get<Row>('SELECT * FROM hosts WHERE host_id = ?', [hostId]);
    return r && toRecord(r);
  }

  async list(): Promise<HostRecord[]> {
    return (await this.db.all<Row>('SELECT * FROM hosts ORDER BY host_id')).map(toRecord);
  }

  /** Whether hostId is a remote host: it holds a live credential, so its agent connects over TLS only. */
  async isRemote(hostId: string): Promise<boolean> {
    const r = await this.get(hostId);
    return r !== undefined && r.revokedAt === null;
  }

  /** Refuses a host that has a live credential already: a second one would be a credential nobody tracks. */
  async refuseLive(hostId: string): Promise<void> {
    if (await this.isRemote(hostId)) {
      throw new VdiskError(`host ${hostId} has a credential already: revoke it first (vdisk host rm ${hostId})`, { code: 'EEXIST' });
    }
  }

  /** Records hostId's new credential (replacing a revoked one), committed before the caller answers. */
  async add(hostId: string, c: { fingerprint: string; serial: string; notAfter: string }): Promise<HostRecord> {
    await this.db.transaction(async () => {
      const live = await this.db.get<{ n: number }>('SELECT COUNT(*) AS n FROM hosts WHERE host_id = ? AND revoked_at IS NULL', [hostId]);
      if (live?.n) throw new VdiskError(`host ${hostId} has a credential already: revoke it first (vdisk host rm ${hostId})`, { code: 'EEXIST' });
      await this.db.run(`INSERT INTO hosts (host_id, fingerprint, serial, not_after) VALUES (?, ?, ?, ?)
        ON CONFLICT (host_id) DO UPDATE SET fingerprint = excluded.fingerprint, serial = excluded.serial, not_after = excluded.not_after,
          issued_at = strftime('%Y-%m-%dT%H:%M:%fZ'), revoked_at = NULL`, [hostId, c.fingerprint, c.serial, c.notAfter]);
    });
    return (await this.get(hostId)) as HostRecord;
  }

  /** Revokes hostId's credential (committed); the caller then closes its live connections. */
  async revoke(hostId: string): Promise<HostRecord> {
    const changed = await this.db.transaction(async () =>
      (await this.db.run(`UPDATE hosts SET revoked_at = strftime('%Y-%m-%dT%H:%M:%fZ') WHERE host_id = ? AND revoked_at IS NULL`, [hostId])).changes);
    if (changed === 0) {
      const r = await this.get(hostId);
      throw new VdiskError(r ? `the credential of host ${hostId} was revoked already (${r.revokedAt})` : `host ${hostId} has no credential`, { code: 'ENOENT' });
    }
    return (await this.get(hostId)) as HostRecord;
  }

  /** A TLS peer's certificate is hostId's live credential, or the reason it is not. */
  async authenticate(hostId: string, fingerprint256: string): Promise<void> {
    const r = await this.get(hostId);
    if (!r) throw new VdiskError(`host ${hostId} has no credential on this controller`, { code: 'EACCES' });
    if (r.revokedAt !== null) throw new VdiskError(`the credential of host ${hostId} was revoked (${r.revokedAt})`, { code: 'EACCES' });
    if (r.fingerprint !== fingerprint256) throw new VdiskError(`this certificate of host ${hostId} was replaced by a newer credential`, { code: 'EACCES' });
  }
}
