// The agent's open storage containers: id -> fd in one SharedArrayBuffer that every device's queue workers
// read on each request, so a container the controller adds later is usable without restarting a queue.
// Owned by the agent's main thread; workers only read it (an fd word is written before any entry naming
// that container can be installed, and installs are ordered after it by the table's seqlock).
import fs from 'node:fs';
import { VdiskError } from '../errors.js';
import { openContainer, type OpenContainer } from '../loop/container.js';

/** Container ids the agent can address; the controller numbers containers from 1. */
export const MAX_CONTAINERS = 4096;

export interface ContainerRef { id: number; path: string; failed?: boolean }

export class AgentContainers {
  readonly fds = new Int32Array(new SharedArrayBuffer(MAX_CONTAINERS * 4)).fill(-1);
  private readonly open = new Map<number, OpenContainer>();

  /**
   * Makes the open set match the controller's list: opens new containers and reopens moved ones,
   * publishing each new fd (or -1 for a container no longer listed) at once. Returns whether the set
   * changed, and the replaced fds: requests already planned may still use those, so the caller closes
   * them (retire()) only after a barrier on every device; closing first could let such a request reach
   * whatever file the kernel gives the recycled descriptor number next. Failures are reported, not thrown.
   */
  update(list: ContainerRef[], log: (msg: string) => void): { changed: boolean; retired: number[] } {
    let changed = false;
    const retired: number[] = [];
    const listed = new Set<number>();
    for (const c of list) {
      if (!Number.isInteger(c.id) || c.id < 0 || c.id >= MAX_CONTAINERS) {
        log(`container ${c.id} (${c.path}): id beyond this agent's ${MAX_CONTAINERS}`);
        continue;
      }
      listed.add(c.id);
      const cur = this.open.get(c.id);
      if (cur && cur.path === c.path) continue;
      try {
        const oc = openContainer(c.path, { direct: true });
        this.open.set(c.id, oc);
        Atomics.store(this.fds, c.id, oc.fd);
        if (cur) retired.push(cur.fd);
        changed = true;
      } catch (err) {
        // A container that cannot be opened here gives EIO on its segments (fd -1), as a failed one would.
        log(`container ${c.id}: ${(err as Error).message}`);
      }
    }
    for (const [id, cur] of this.open) {
      if (listed.has(id)) continue;
      // Removed or failed: nothing maps it any more (the controller pushed that, blocking, before).
      Atomics.store(this.fds, id, -1);
      this.open.delete(id);
      retired.push(cur.fd);
      changed = true;
    }
    return { changed, retired };
  }

  /** Closes descriptors update() replaced, once no request planned with them can still be in flight. */
  retire(fds: number[]): void {
    for (const fd of fds) fs.closeSync(fd);
  }

  require(id: number): void {
    if (!this.open.has(id)) throw new VdiskError(`container ${id} is not open on this agent`, { code: 'ENOENT' });
  }

  close(): void {
    for (const c of this.open.values()) fs.closeSync(c.fd);
    this.open.clear();
    this.fds.fill(-1);
  }
}
