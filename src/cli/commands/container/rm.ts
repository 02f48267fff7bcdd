// `vdisk container rm NAME`: forgets a container; refused while any segment or disk still uses it.
import { Command, Option } from 'clipanion';
import { ControllerCommand } from '../../controller-command.js';

export class ContainerRmCommand extends ControllerCommand {
  static override paths = [['container', 'rm']];
  static override usage = Command.Usage({ description: 'remove an unused container (its file is left in place)' });

  name = Option.String({ required: true });

  async run(): Promise<number> {
    await this.call('container.rm', { name: this.name });
    this.print(`container ${this.name} removed`);
    return 0;
  }
}
