// One disk's grants on its agent: the zeroed segments the controller granted, the claims made on them that
// the controller has not confirmed, and the claims file that keeps those across a kill -9 of the agent
// (DESIGN.md, "First writes without a round trip"). Main thread; the grants themselves sit in a ClaimRing
// (io/claim-ring.ts), where the disk's queue workers claim them too.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { Claim, CowClaims, GrantedSegment } from '../protocol/agent-ops.js';
import type { GrantPoolStats } from '../protocol/io-counts.js';
import { CLAIM_RECORD_BYTES, COW_COPY, COW_WHOLE, ClaimRing, decodeClaim, encodeClaim } from '../io/claim-ring.js';
import { failpoint } from '../util/failpoints.js';

export { CLAIM_RECORD_BYTES } from '../io/claim-ring.js';

/** What a grant request answered: new grants (none when refused) and whether the claims sent were applied. */
/** `cow`: which copy-on-write claims the grants may serve too (see ClaimRing.claimCow). */
export interface AskAnswer { grants: GrantedSegment[]; refused?: string; cow?: CowClaims }
/**
 * Sends one disk.grant with claims; rejects when it could not be sent or answered (nothing is retried). The
 * answer goes to `accept` synchronously as its frame is decoded: a revocation in the next frame must find
 * the grants in the pool already, or it would not drop them (they would be used after the controller freed
 * them, as the agent's ordering rule says for table changes).
 */
export type GrantAsker = (want: number, claims: Claim[], accept: (a: AskAnswer) => void) => Promise<unknown>;

/** Pool sizes: the first request, and the most held, in bytes (VDISK_GRANT_MAX_MB; 0 turns grants off). */
export const GRANT_FIRST_BYTES = 64 << 20;
/** How long claims alone wait for company before they go (a top-up takes them at once). */
export const CLAIMS_DELAY_MS = 50;
export const GRANT_MAX_BYTES = Number(process.env.VDISK_GRANT_MAX_MB ?? 512) * (1 << 20);
/** After a refusal (another holder, no room), how long before asking again. */
const REFUSED_MS = 2000;

export class GrantPool {
  /** The grants held, shared with the disk's queue workers (they claim from it, see ClaimRing.claim). */
  readonly ring: ClaimRing;
  private pending: Array<Claim & { seq: number }> = [];
  private seq = 0;
  private fd = -1;
  /** Records of the claims file already in `pending`: the rest were appended since (by take() or a worker). */
  private known = 0;
  /** Bumped when the lease expires: an answer to a request sent before carries grants the controller may have freed. */
  private epoch = 0;
  private asking = false;
  /** The pool doubled since the last request went out. */
  private grew = false;
  private scheduled: 'now' | 'later' | undefined;
  private timer: NodeJS.Timeout | undefined;
  /** The last claim sent in a grant request (resent after a failed one). */
  private sentUpTo = 0;
  private refusedUntil = 0;
  /** Segments a request tops the pool up to: doubles whenever a write found it empty while one was out. */
  private target: number;
  private readonly max: number;
  readonly stats = { claims: 0, requests: 0, empty: 0 };
  /** Settles when the first request has its answer (or failed). */
  private readonly first: Promise<void>;
  private firstDone!: () => void;

  constructor(readonly file: string, segmentSize: number, private readonly ask: GrantAsker, private readonly log: (m: string) => void) {
    this.max = Math.floor(GRANT_MAX_BYTES / segmentSize);
    this.target = Math.min(this.max, Math.max(1, Math.floor(GRANT_FIRST_BYTES / segmentSize)));
    this.ring = ClaimRing.create(this.max);
    this.first = new Promise<void>((resolve) => { this.firstDone = resolve; });
  }

  /** Waits, at most `ms`, for the answer to the first request (prime()'s): false when it did not come in time. */
  async answered(ms: number): Promise<boolean> {
    if (this.max === 0) return true;
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<boolean>((resolve) => { timer = setTimeout(() => resolve(false), ms); });
    try {
      return await Promise.race([this.first.then(() => true), late]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Whether first writes are served from grants (on, and not refused lately). */
  get active(): boolean {
    return this.max > 0 && Date.now() >= this.refusedUntil;
  }

  /** Asks for the first grants ahead of any write (the disk's table was just created). */
  prime(): void {
    this.kick();
  }

  /** For agent.status. */
  report(): GrantPoolStats {
    this.collect();
    return { held: this.ring.size, target: this.target, unconfirmed: this.pending.length, ...this.stats };
  }

  /** Grants held now. */
  get held(): number {
    return this.ring.size;
  }

  /**
   * A granted segment for a first write at Zero entry `segment`, its claim already in the claims file (the
   * page cache keeps it across a kill -9; the caller installs the entry after). Undefined when none is held:
   * the write faults as before, and a refill starts.
   */
  take(segment: number): GrantedSegment | undefined {
    if (this.max === 0) return undefined;
    this.checkBroken();
    const g = this.ring.locked(() => {
      const got = this.ring.pop();
      if (!got) return undefined;
      try {
        this.append(segment, got);
      } catch (err) {
        // Without its record a claim could be lost with the agent: give the grants back to the fault path.
        this.log(`claims file ${this.file}: ${(err as Error).message}; first writes fault instead`);
        this.ring.clear();
        this.refusedUntil = Date.now() + REFUSED_MS;
        return null;
      }
      this.ring.records++;
      this.collectLocked();
      return got;
    });
    if (g === null) return undefined;
    if (!g) {
      this.outran();
      return undefined;
    }
    if (this.pending.length > 1) failpoint('agent.claimed');
    this.kick();
    return g;
  }

  /** A writer found the ring empty: the pool doubles, once per request (16 writes finding it empty together are one outrun). */
  private outran(): void {
    this.stats.empty++;
    if (!this.grew && this.target < this.max) {
      this.target = Math.min(this.max, this.target * 2);
      this.grew = true;
    }
    this.kick();
  }

  /** A queue claimed from the ring (its record is in the file): sent on with the next request; a top-up if low. */
  claimed(): void {
    this.kick();
  }

  /** The claims file, open for appends and reads (created when the first grants arrive; under the lock). */
  private open(): void {
    if (this.fd >= 0) return;
    fs.mkdirSync(path.dirname(this.file), { recursive: true, mode: 0o700 });
    this.fd = fs.openSync(this.file, fs.constants.O_RDWR | fs.constants.O_CREAT | fs.constants.O_APPEND, 0o600);
    this.known = this.ring.records = Math.floor(fs.fstatSync(this.fd).size / CLAIM_RECORD_BYTES);
    this.ring.fd = this.fd;
  }

  private append(segment: number, g: GrantedSegment): void {
    this.open();
    this.ring.writeRecord(this.fd, segment, g.container, g.offset);
  }

  /** Claims the workers appended since the last look: into `pending`, in file order. */
  private collect(): void {
    if (this.fd >= 0 && this.ring.records > this.known) this.ring.locked(() => this.collectLocked());
  }

  private collectLocked(): void {
    const n = this.ring.records - this.known;
    if (this.fd < 0 || n <= 0) return;
    const buf = Buffer.alloc(n * CLAIM_RECORD_BYTES);
    const got = fs.readSync(this.fd, buf, 0, buf.length, this.known * CLAIM_RECORD_BYTES);
    for (let o = 0; o + CLAIM_RECORD_BYTES <= got; o += CLAIM_RECORD_BYTES) {
      const c = decodeClaim(buf, o);
      if (!c) throw new Error(`claims file ${this.file}: a bad record at ${this.known * CLAIM_RECORD_BYTES + o}`);
      this.pending.push({ ...c, seq: ++this.seq });
      this.stats.claims++;
    }
    this.known += Math.floor(got / CLAIM_RECORD_BYTES);
  }

  /** A worker could not append a claim: no more grants to the ring for a while (first writes fault). */
  private checkBroken(): void {
    if (!this.ring.broken) return;
    this.ring.locked(() => {
      this.ring.clear();
      this.ring.broken = false;
    });
    this.log(`claims file ${this.file}: a queue could not append a claim; first writes fault instead for ${REFUSED_MS} ms`);
    this.refusedUntil = Date.now() + REFUSED_MS;
  }

  /** The claims not yet confirmed, and the sequence number that confirms them all (see confirm()). */
  unconfirmed(): { claims: Claim[]; upTo: number } {
    this.collect();
    return { claims: this.pending.map(({ seq: _seq, ...c }) => c), upTo: this.seq };
  }

  /**
   * The controller committed every claim up to `upTo`: they leave the pool and the file. Only unconfirmed
   * claims may stay in the file: a confirmed one read back after a kill -9 could name a segment that was
   * discarded and granted again since. So the file is truncated, or rewritten with the rest (a rename: a
   * kill -9 leaves the old file or the new one, never half of either).
   */
  confirm(upTo: number): void {
    if (this.pending.length === 0 || this.pending[0].seq > upTo) return;
    // Under the lock: no worker appends to the file while it is cut down or replaced.
    this.ring.locked(() => {
      this.collectLocked();
      this.pending = this.pending.filter((c) => c.seq > upTo);
      if (this.fd < 0) return;
      if (this.pending.length === 0) {
        fs.ftruncateSync(this.fd, 0);
        this.known = this.ring.records = 0;
        return;
      }
      const all = Buffer.alloc(this.pending.length * CLAIM_RECORD_BYTES);
      this.pending.forEach((c, k) => encodeClaim(all, k * CLAIM_RECORD_BYTES, c.segment, c.container, c.offset, c.cow));
      const tmp = `${this.file}.tmp`;
      fs.writeFileSync(tmp, all, { mode: 0o600 });
      fs.renameSync(tmp, this.file);
      const old = this.fd;
      this.fd = fs.openSync(this.file, fs.constants.O_RDWR | fs.constants.O_APPEND);
      this.ring.fd = this.fd;
      fs.closeSync(old);
      this.known = this.ring.records = this.pending.length;
    });
  }

  /**
   * Sends what is due, one request at a time: at once when the pool is at half or less, else the claims not
   * sent yet after CLAIMS_DELAY_MS (nobody waits on them; the controller's view of the disk follows within that
   * and a round trip). Either tops the pool up to its target.
   */
  private kick(): void {
    if (this.asking || this.max === 0) return;
    // A top-up goes at once; claims alone wait a little for more (each is a commit on the controller).
    this.checkBroken();
    const due = this.ring.size * 2 <= this.target && Date.now() >= this.refusedUntil;
    if (this.scheduled === 'now' || (this.scheduled === 'later' && !due)) return;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.scheduled = due ? 'now' : 'later';
    const go = () => {
      this.scheduled = undefined;
      this.timer = undefined;
      this.send();
    };
    if (due) setImmediate(go);
    else (this.timer = setTimeout(go, CLAIMS_DELAY_MS)).unref();
  }

  private send(): void {
    if (this.asking) return;
    this.collect(); // the queues' claims since the last look are unsent too
    // Any request tops the ring up, not only one sent because it ran low: claims alone go every
    // CLAIMS_DELAY_MS under a steady writer, and a ring refilled with them seldom runs dry (measured: a 1 MiB
    // sequential writer emptied a pool topped up only at half before the top-up came back).
    const want = this.ring.size < this.target && Date.now() >= this.refusedUntil ? this.target - this.ring.size : 0;
    const unsent = this.pending.length > 0 && this.pending[this.pending.length - 1].seq > this.sentUpTo;
    if (want === 0 && !unsent) return;
    this.asking = true;
    this.grew = false;
    this.stats.requests++;
    const epoch = this.epoch;
    const { claims, upTo } = this.unconfirmed();
    this.sentUpTo = upTo;
    this.ask(want, claims, (a) => {
      this.confirm(upTo);
      if (epoch === this.epoch && a.grants.length > 0) {
        this.ring.locked(() => {
          this.open();
          for (const g of a.grants) if (!this.ring.push(g.container, g.offset)) break;
          // Every grant held is now one this answer's rule covers: those of earlier answers were given under
          // the same disk state (a change of it revokes them all first).
          this.ring.cow = a.cow === 'copy' ? COW_COPY : a.cow === 'whole' ? COW_WHOLE : 0;
        });
      }
      if (a.refused) this.refusedUntil = Date.now() + REFUSED_MS;
    }).then(() => {
      this.asking = false;
      this.firstDone();
      this.kick(); // claims made meanwhile
    }, () => {
      this.firstDone();
      // No link, or no answer: what was not confirmed goes with the next request (a claim, a sync, a registration).
      this.sentUpTo = this.seq - this.pending.length;
      this.asking = false;
    });
  }

  /**
   * Stops using what is held: a revocation (the controller frees it next), a lost link, or an expired lease
   * (then answers still on their way are ignored too). Unconfirmed claims stay, for the next message.
   */
  drop(leaseExpired = false): void {
    // Under the lock: a worker's claim under way ends first, and none starts after (the ring is empty).
    this.ring.locked(() => this.ring.clear());
    if (leaseExpired) this.epoch++;
  }

  /**
   * The disk is gone from this agent, and its file with it: the caller has handed the unconfirmed claims to
   * the controller (a device stop's reply). A file left behind would be sent by the next agent, long after.
   */
  close(): void {
    this.drop(true);
    if (this.timer) clearTimeout(this.timer);
    this.ring.locked(() => {
      this.ring.fd = -1;
      if (this.fd >= 0) fs.closeSync(this.fd);
      this.fd = -1;
      fs.rmSync(this.file, { force: true });
    });
  }
}

/** The claims files a previous agent left (`<diskId>.claims` in dir), by disk; a torn last record is ignored. */
export function readClaimsFiles(dir: string): Map<number, Claim[]> {
  const out = new Map<number, Claim[]>();
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch {
    return out;
  }
  for (const name of names) {
    const m = /^(\d+)\.claims$/.exec(name);
    if (!m) continue;
    const data = fs.readFileSync(path.join(dir, name));
    const claims: Claim[] = [];
    for (let o = 0; o + CLAIM_RECORD_BYTES <= data.length; o += CLAIM_RECORD_BYTES) {
      const c = decodeClaim(data, o);
      if (!c) break;
      claims.push(c);
    }
    if (claims.length) out.set(Number(m[1]), claims);
    else fs.rmSync(path.join(dir, name), { force: true });
  }
  return out;
}

/**
 * Where an agent keeps its claims files: VDISK_CLAIMS_DIR, else under /run (root) or the temp dir, per host and
 * per controller (a hash of its socket path or address). Disk ids are the controller's: two clusters' agents
 * with one host id on one machine (test clusters side by side) would otherwise share, truncate and delete each
 * other's files. The next agent finds them when it is started against the same controller endpoint.
 */
export function claimsDir(hostId: string, controller: string): string {
  const base = process.env.VDISK_CLAIMS_DIR
    ?? (process.getuid?.() === 0 ? '/run/vdisk/claims' : path.join(process.env.TMPDIR ?? '/tmp', `vdisk-claims-${process.getuid?.() ?? 0}`));
  return path.join(base, `${hostId}-${crypto.createHash('sha256').update(controller).digest('hex').slice(0, 12)}`);
}
