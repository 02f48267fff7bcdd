// The controller's side of container labels (src/label): writing one when a container is added (durably,
// before the add commits), refusing storage that already carries one, wiping it when the container is
// removed, and what the agents reported: the containers each host holds in Error (a wrong or missing label,
// a path that cannot be opened there). Those reports live in memory: every agent reports again on each
// container list it gets (at registration too), so a restarted controller relearns them.
import { VdiskError } from '../errors.js';
import { LABEL_BYTES, decodeLabel, encodeLabel, readLabelAt, writeLabelAt } from '../label/container-label.js';
import type { Container } from './store.js';

/** A label written on new storage, and how to put back the block it replaced if the add is then refused. */
export interface Written { uuid: string; undo(): Promise<void> }

/** What a refusal compares a label with: this controller's containers and its uncommitted adds' labels. */
export interface KnownLabels { containers: Container[]; intents: Set<string> }

/**
 * Labels the storage at `p` for a new container with `uuid`, which the caller has recorded as an intent
 * (durably, first: a crash after this write leaves a label the controller can tell is its own). Storage
 * that holds another vdisk label is refused: a container of this controller's (by what it holds, whatever
 * path names it) or of another's.
 */
export async function labelNew(p: string, uuid: string, name: string, size: number, known: KnownLabels): Promise<Written> {
  const before = await readLabelAt(p).catch((err: unknown) => { throw VdiskError.from(err, `cannot read ${p}`); });
  refuseLabelled(p, before, known);
  await writeLabelAt(p, encodeLabel({ uuid, size, name }));
  return { uuid, undo: () => writeLabelAt(p, before) };
}

/** Refuses storage whose first block `head` is a vdisk label (checked before anything touches the file, and again right before labelling). */
export function refuseLabelled(p: string, head: Buffer, known: KnownLabels): void {
  const found = decodeLabel(head);
  if ('problem' in found || known.intents.has(found.uuid)) return; // no label, or one a crashed add of ours left
  const mine = known.containers.find((c) => c.uuid === found.uuid);
  throw new VdiskError(mine
    ? `${p} holds the label of container ${mine.name} (${mine.path}): one backing store backs at most one container`
    : `${p} holds the label of vdisk container ${found.name || '?'} (${found.uuid}), which this controller does not know: ` +
      `another controller's, or one removed while unreachable; if it is free, zero its first ${LABEL_BYTES} bytes first`, { code: 'EEXIST' });
}

/**
 * Wipes the label of a removed container, so its storage can be added again; only when the label there is
 * still this container's (the path may name something else by now). Returns why not, or null once wiped.
 */
export async function wipeLabel(c: Container): Promise<string | null> {
  if (c.uuid === null) return null;
  try {
    const l = decodeLabel(await readLabelAt(c.path));
    if ('problem' in l || l.uuid !== c.uuid) return `${c.path} no longer holds its label: left as it is`;
    await writeLabelAt(c.path, Buffer.alloc(LABEL_BYTES));
    return null;
  } catch (err) {
    return `cannot wipe the label on ${c.path}: ${(err as Error).message}`;
  }
}

/** The path a host reaches a container by: its own for that host, else the container's. */
export function pathOn(c: Container, hostId: string): string {
  return c.hostPaths[hostId] ?? c.path;
}

/** Containers in Error per host, as the agents last reported them. */
export class ContainerHealth {
  private readonly byHost = new Map<string, Map<number, string>>();

  report(hostId: string, errors: Array<{ id: number; problem: string }>): void {
    this.byHost.set(hostId, new Map(errors.map((e) => [e.id, e.problem])));
  }

  /** The hosts where a container is in Error, and why. */
  errorsOf(id: number): Array<{ hostId: string; problem: string }> {
    const out: Array<{ hostId: string; problem: string }> = [];
    for (const [hostId, m] of [...this.byHost].sort(([a], [b]) => a.localeCompare(b))) {
      const problem = m.get(id);
      if (problem !== undefined) out.push({ hostId, problem });
    }
    return out;
  }
}
