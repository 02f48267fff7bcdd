// `vdisk container ls`: containers with their used and free space, per-host paths, and the hosts where
// one is in Error (its label not found there).
import { Command, Option } from 'clipanion';
import type { Container } from '../../../controller/store.js';
import { formatSize } from '../../../util/size.js';
import { LABEL_RESERVED_BYTES } from '../../../label/container-label.js';
import { ControllerCommand, formatTable } from '../../controller-command.js';

/** A container as listed: with the hosts that hold it in Error (a wrong or missing label there). */
type Listed = Container & { errors: Array<{ hostId: string; problem: string }> };

function state(c: Listed): string {
  if (c.failed) return 'failed (no new allocations)';
  const hosts = c.errors.map((e) => e.hostId);
  const label = c.uuid === null ? ' (no label)' : '';
  return hosts.length ? `Error on ${hosts.join(', ')}${label}` : `ok${label}`;
}

export class ContainerLsCommand extends ControllerCommand {
  static override paths = [['container', 'ls']];
  static override usage = Command.Usage({ description: 'list storage containers' });

  json = Option.Boolean('--json', false, { description: 'print as JSON' });

  async run(): Promise<number> {
    const list = await this.call<Listed[]>('container.ls');
    if (this.json) this.print(JSON.stringify(list));
    else {
      this.context.stdout.write(formatTable(['NAME', 'SIZE', 'USED', 'FREE', 'STATE', 'PATH'],
        // A failed container allocates nothing: its free space is none, and the state says why. The label's
        // reserve is never allocated; segments granted to a writer (not yet claimed) are neither used nor free.
        list.map((c) => [c.name, formatSize(c.size), formatSize(c.usedBytes), c.failed ? '0' : formatSize(c.size - c.usedBytes - c.grantedBytes - (c.uuid === null ? 0 : LABEL_RESERVED_BYTES)), state(c), c.path])));
      for (const c of list) {
        for (const [host, p] of Object.entries(c.hostPaths)) this.print(`${c.name} on host ${host}: ${p}`);
        for (const e of c.errors) this.print(`${c.name} is in Error on host ${e.hostId}: ${e.problem}`);
      }
    }
    return 0;
  }
}
