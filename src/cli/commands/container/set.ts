// `vdisk container set NAME --host-path HOST=PATH ...`: changes the path a host reaches a container by
// (HOST= goes back to the container's own path). The agent there checks the label before serving it.
import { Command, Option, UsageError } from 'clipanion';
import type { Container } from '../../../controller/store.js';
import { hostPathsOption } from '../../base.js';
import { ControllerCommand } from '../../controller-command.js';

export class ContainerSetCommand extends ControllerCommand {
  static override paths = [['container', 'set']];
  static override usage = Command.Usage({
    description: 'change the path a host reaches a container by',
    examples: [['Host h2 sees the LUN as /dev/sdc', '$0 container set lun1 --host-path h2=/dev/sdc'], ['Back to the common path', '$0 container set lun1 --host-path h2=']],
  });

  name = Option.String({ required: true });
  hostPaths = Option.Array('--host-path', { description: 'HOST=PATH, or HOST= to clear (repeatable)' });
  json = Option.Boolean('--json', false, { description: 'print as JSON' });

  async run(): Promise<number> {
    const hostPaths = hostPathsOption(this.hostPaths, true);
    if (Object.keys(hostPaths).length === 0) throw new UsageError('give at least one --host-path HOST=PATH');
    const c = await this.call<Container>('container.set', { name: this.name, hostPaths });
    if (this.json) this.print(JSON.stringify(c));
    else this.print(`container ${c.name}: ${c.path}${Object.entries(c.hostPaths).map(([h, p]) => `, on ${h} ${p}`).join('')}`);
    return 0;
  }
}
