// `vdisk container ls`: containers with their used and free space.
import { Command, Option } from 'clipanion';
import type { Container } from '../../../controller/store.js';
import { formatSize } from '../../../util/size.js';
import { ControllerCommand, formatTable } from '../../controller-command.js';

export class ContainerLsCommand extends ControllerCommand {
  static override paths = [['container', 'ls']];
  static override usage = Command.Usage({ description: 'list storage containers' });

  json = Option.Boolean('--json', false, { description: 'print as JSON' });

  async run(): Promise<number> {
    const list = await this.call<Container[]>('container.ls');
    if (this.json) this.print(JSON.stringify(list));
    else this.context.stdout.write(formatTable(['NAME', 'SIZE', 'USED', 'FREE', 'STATE', 'PATH'],
      // A failed container allocates nothing: its free space is none, and the state says why.
      list.map((c) => [c.name, formatSize(c.size), formatSize(c.usedBytes), c.failed ? '0' : formatSize(c.size - c.usedBytes),
        c.failed ? 'failed (no new allocations)' : 'ok', c.path])));
    return 0;
  }
}
