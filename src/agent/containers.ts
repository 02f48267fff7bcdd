// The agent's open storage containers: id -> fd in one SharedArrayBuffer that every device's queue workers
// read on each request, so a container the controller adds later is usable without restarting a queue.
// Owned by the agent's main thread; workers only read it (an fd word is written before any entry naming
// that container can be installed, and installs are ordered after it by the table's seqlock).
// A labelled container is served only once its label (src/label) names it: a wrong path on this host makes
// it Error here (fd -1: its segments fail with EIO), never opened for I/O, and reported to the controller.
import fs from 'node:fs';
import { VdiskError } from '../errors.js';
import { openContainer, type OpenContainer } from '../loop/container.js';
import { labelProblem, readLabelBlock } from '../label/container-label.js';

/** Container ids the agent can address; the controller numbers containers from 1. */
export const MAX_CONTAINERS = 4096;

/** `uuid` and `size`: what its label must say (absent for a container from before labels). */
export interface ContainerRef { id: number; path: string; uuid?: string; size?: number }
/** A container this agent will not serve, and why. */
export interface ContainerError { id: number; problem: string }

interface Opened extends OpenContainer { uuid: string | undefined }

export class AgentContainers {
  readonly fds = new Int32Array(new SharedArrayBuffer(MAX_CONTAINERS * 4)).fill(-1);
  private readonly open = new Map<number, Opened>();
  /** Containers in Error on this host: id -> why. Checked again on every update (a path fixed in place). */
  private readonly failed = new Map<number, string>();

  /**
   * Makes the open set match the controller's list: opens new containers and reopens moved ones,
   * publishing each new fd (or -1 for a container no longer listed or in Error) at once. Returns whether
   * the set changed, the replaced fds (requests already planned may still use those, so the caller closes
   * them with retire() only after a barrier on every device; closing first could let such a request reach
   * whatever file the kernel gives the recycled descriptor number next), and the containers in Error here.
   */
  update(list: ContainerRef[], log: (msg: string) => void): { changed: boolean; retired: number[]; errors: ContainerError[] } {
    let changed = false;
    const retired: number[] = [];
    const listed = new Set<number>();
    const drop = (id: number): void => {
      const cur = this.open.get(id);
      if (!cur) return;
      Atomics.store(this.fds, id, -1);
      this.open.delete(id);
      retired.push(cur.fd);
      changed = true;
    };
    for (const c of list) {
      if (!Number.isInteger(c.id) || c.id < 0 || c.id >= MAX_CONTAINERS) {
        log(`container ${c.id} (${c.path}): id beyond this agent's ${MAX_CONTAINERS}`);
        continue;
      }
      listed.add(c.id);
      const cur = this.open.get(c.id);
      if (cur && cur.path === c.path && cur.uuid === c.uuid) continue;
      try {
        const oc = openChecked(c);
        this.open.set(c.id, oc);
        this.failed.delete(c.id);
        Atomics.store(this.fds, c.id, oc.fd);
        if (cur) retired.push(cur.fd);
        changed = true;
      } catch (err) {
        // Error on this host: nothing of it is served here (fd -1 gives EIO), whatever was open before.
        const problem = (err as Error).message;
        if (this.failed.get(c.id) !== problem) log(`container ${c.id}: ${problem}`);
        this.failed.set(c.id, problem);
        drop(c.id);
      }
    }
    for (const id of [...this.open.keys()]) if (!listed.has(id)) drop(id); // removed or failed: nothing maps it any more
    for (const id of [...this.failed.keys()]) if (!listed.has(id)) this.failed.delete(id);
    return { changed, retired, errors: [...this.failed].map(([id, problem]) => ({ id, problem })) };
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

/**
 * Opens a container for the data path once its label is the expected one. The label is read on a read-only
 * descriptor first (nothing is opened for writing on a wrong path), and the data-path descriptor must then
 * be the same file or device (a path that changed in between is refused, not trusted).
 */
function openChecked(c: ContainerRef): Opened {
  if (c.uuid === undefined) return { ...openContainer(c.path, { direct: true }), uuid: undefined };
  // O_DIRECT where the file system allows it: a block device's page cache on this host can hold a label that
  // another host has since overwritten on the shared storage (held open by anyone, the cache outlives our
  // closes), and that stale label would pass for the container's.
  const probe = openContainer(c.path, { direct: true, readOnly: true });
  try {
    const problem = labelProblem(readLabelBlock(probe.fd, probe.direct), { uuid: c.uuid, size: c.size ?? -1 });
    if (problem) throw new VdiskError(`${c.path} holds ${problem}, not this container's label (${c.uuid}): not served on this host`, { code: 'EMEDIUMTYPE' });
    const oc = openContainer(c.path, { direct: true });
    const a = fs.fstatSync(probe.fd);
    const b = fs.fstatSync(oc.fd);
    const same = a.isBlockDevice() ? b.isBlockDevice() && a.rdev === b.rdev : a.dev === b.dev && a.ino === b.ino;
    const short = c.size !== undefined && oc.size < c.size;
    if (!same || short) {
      fs.closeSync(oc.fd);
      throw new VdiskError(same ? `${c.path} holds only ${oc.size} bytes, its label says ${c.size}: not served on this host`
        : `${c.path} changed while it was being opened: not served on this host`, { code: 'EMEDIUMTYPE' });
    }
    return { ...oc, uuid: c.uuid };
  } finally {
    fs.closeSync(probe.fd);
  }
}
