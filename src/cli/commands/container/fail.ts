// `vdisk container fail NAME`: the operator's way to declare a container lost: its entries turn to Error,
// so hosts get EIO on exactly those segments while everything else keeps working.
import { Command, Option } from 'clipanion';
import { ControllerCommand } from '../../controller-command.js';

export class ContainerFailCommand extends ControllerCommand {
  static override paths = [['container', 'fail']];
  static override usage = Command.Usage({ description: 'mark a container failed: its segments return EIO' });

  name = Option.String({ required: true });
  json = Option.Boolean('--json', false, { description: 'print as JSON' });

  async run(): Promise<number> {
    const r = await this.call<{ disks: Array<{ disk: string; entries: number }> }>('container.fail', { name: this.name });
    if (this.json) this.print(JSON.stringify(r));
    else this.print(`container ${this.name} failed; segments now in Error: ${r.disks.map((d) => `${d.disk} ${d.entries}`).join(', ') || 'none'}`);
    return 0;
  }
}
