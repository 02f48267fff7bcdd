// The controller's view of its agents: which host ids are connected on which connection, their leases, and
// when each was lost. A blocking change to a disk must reach every agent mapping it; for an agent that is
// unreachable the controller instead waits until that agent has certainly suspended (made its tables Invalid
// and drained the requests planned with them: protocol/lease.ts), counting from when the link dropped or,
// after a controller restart, from start.
import type { Connection } from '../protocol/connection.js';
import { DEFAULT_LEASE_MS, fenceMs } from '../protocol/lease.js';
import { sleep } from '../util/sleep.js';

export { DEFAULT_LEASE_MS as DEFAULT_AGENT_LEASE_MS } from '../protocol/lease.js';

export interface AgentLink { hostId: string; conn: Connection; pid: number; leaseMs: number; since: number }

export class AgentRegistry {
  private readonly links = new Map<string, AgentLink>();
  private readonly lost = new Map<string, { at: number; leaseMs: number }>();
  private readonly startedAt = Date.now();
  /** Leases agents registered with before this controller started (from the store). */
  knownLeases = new Map<string, number>();

  add(link: AgentLink): void {
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
