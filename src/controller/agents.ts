// The controller's view of its agents: which host ids are connected on which connection, their leases, and
// when each was lost. A blocking change to a disk must reach every agent mapping it; for an agent that is
// unreachable the controller instead waits until that agent has certainly suspended (made its tables Invalid
// and drained the requests planned with them: protocol/lease.ts), counting from when the link dropped or,
// after a controller restart, from start. A link that stays open but goes silent (a partition drops packets,
// nothing closes the TCP connection) is lost too, from the last ping the controller answered.
import type { Connection } from '../protocol/connection.js';
import { DEFAULT_LEASE_MS, TIMER_SLACK_MS, fenceMs } from '../protocol/lease.js';
import { sleep } from '../util/sleep.js';

export { DEFAULT_LEASE_MS as DEFAULT_AGENT_LEASE_MS } from '../protocol/lease.js';

export interface AgentLink {
  hostId: string; conn: Connection; pid: number; leaseMs: number; since: number;
  /**
   * When the controller last answered this agent's register or ping. The agent's lease counts from when it sent
   * the last one answered, which is no later: an agent not heard from for its lease has suspended by
   * heard + fenceMs, whether or not its connection still looks open.
   */
  heard?: number;
}

export class AgentRegistry {
  private readonly links = new Map<string, AgentLink>();
  private readonly lost = new Map<string, { at: number; leaseMs: number }>();
  private readonly startedAt = Date.now();
  private readonly watchdog: NodeJS.Timeout;
  private lastTick = Date.now();
  /** Leases agents registered with before this controller started (from the store). */
  knownLeases = new Map<string, number>();

  constructor(private readonly log: (m: string) => void = () => {}) {
    // Unref'd: it never keeps the controller alive; stop() clears it.
    this.watchdog = setInterval(() => {
      // After a stall of this process, pings may wait unread in the sockets: read them before judging anyone.
      const now = Date.now();
      const late = now - this.lastTick > 1000;
      this.lastTick = now;
      if (!late) this.dropSilent(now);
    }, 250);
    this.watchdog.unref();
  }

  stop(): void {
    clearInterval(this.watchdog);
  }

  /** An answered register or ping from the agent on conn (see AgentLink.heard). */
  heardFrom(hostId: string, conn: Connection): void {
    const l = this.links.get(hostId);
    if (l?.conn === conn) l.heard = Date.now();
  }

  /**
   * Links silent for longer than their lease (and timer slack) are lost from their last answered ping: the
   * connection is closed, so blocking changes waiting on it stop waiting and count the fence from `heard`
   * instead of failing after their timeout; the agent, suspended by then, reconnects and reloads.
   */
  dropSilent(now = Date.now()): void {
    for (const [hostId, l] of this.links) {
      const heard = l.heard ?? l.since;
      if (now - heard <= l.leaseMs + TIMER_SLACK_MS) continue;
      this.links.delete(hostId);
      this.lost.set(hostId, { at: heard, leaseMs: l.leaseMs });
      this.log(`agent ${hostId} silent for ${now - heard} ms (lease ${l.leaseMs} ms): its link is dropped and counted lost since its last ping`);
      l.conn.socket.destroy();
    }
  }

  add(link: AgentLink): void {
    link.heard ??= Date.now();
    const old = this.links.get(link.hostId);
    if (old && old.conn !== link.conn) old.conn.socket.destroy(); // a restarted agent replaces its predecessor
    this.links.set(link.hostId, link);
    this.lost.delete(link.hostId);
    void link.conn.closed.then(() => {
      if (this.links.get(link.hostId)?.conn !== link.conn) return;
      this.links.delete(link.hostId);
      this.lost.set(link.hostId, { at: Date.now(), leaseMs: link.leaseMs });
    });
  }

  get(hostId: string): AgentLink | undefined {
    const l = this.links.get(hostId);
    return l && l.conn.isOpen ? l : undefined;
  }

  list(): AgentLink[] {
    return [...this.links.values()].filter((l) => l.conn.isOpen);
  }

  /** When the controller may act on a lost agent's disks (see protocol/lease.ts); undefined while connected. */
  fenceTime(hostId: string): number | undefined {
    if (this.get(hostId)) return undefined;
    const lost = this.lost.get(hostId) ?? { at: this.startedAt, leaseMs: this.knownLeases.get(hostId) ?? DEFAULT_LEASE_MS };
    return this.fencedAt(lost);
  }

  private fencedAt(lost: { at: number; leaseMs: number }): number {
    return lost.at + fenceMs(lost.leaseMs);
  }

  /** Resolves when hostId is connected, or once its lease has expired for sure. Returns the link if connected. */
  async reachableOrExpired(hostId: string): Promise<AgentLink | undefined> {
    for (;;) {
      const link = this.get(hostId);
      if (link) return link;
      const lost = this.lost.get(hostId) ?? { at: this.startedAt, leaseMs: this.knownLeases.get(hostId) ?? DEFAULT_LEASE_MS };
      const left = this.fencedAt(lost) - Date.now();
      if (left <= 0) return undefined;
      await sleep(Math.min(left, 100));
    }
  }
}
