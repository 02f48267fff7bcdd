// `vdisk rm DISK`: deletes a disk and frees the storage nobody else references; refused while attached.
import { Command, Option } from 'clipanion';
import { ControllerCommand } from '../controller-command.js';

export class RmCommand extends ControllerCommand {
  static override paths = [['rm']];
  static override usage = Command.Usage({ description: 'delete a virtual disk and free its unshared storage' });

  name = Option.String({ required: true });

  async run(): Promise<number> {
    await this.callLong('disk.rm', { name: this.name }, `removing ${this.name}`);
    this.print(`disk ${this.name} removed`);
    return 0;
  }
}
