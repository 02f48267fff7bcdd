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

  /** Opens containers not yet open. Returns true when the set of open fds changed. Failures are reported, not thrown. */
  update(list: ContainerRef[], log: (msg: string) => void): boolean {
    let changed = false;
    for (const c of list) {
      if (!Number.isInteger(c.id) || c.id < 0 || c.id >= MAX_CONTAINERS) {
        log(`container ${c.id} (${c.path}): id beyond this agent's ${MAX_CONTAINERS}`);
        continue;
      }
      const cur = this.open.get(c.id);
      if (cur && cur.path === c.path) continue;
      try {
        const oc = openContainer(c.path, { direct: true });
        if (cur) fs.closeSync(cur.fd);
        this.open.set(c.id, oc);
        Atomics.store(this.fds, c.id, oc.fd);
        changed = true;
      } catch (err) {
        // A container that cannot be opened here gives EIO on its segments (fd -1), as a failed one would.
        log(`container ${c.id}: ${(err as Error).message}`);
      }
    }
    return changed;
  }

  flushFds(): number[] {
    return [...this.open.values()].map((c) => c.fd);
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
