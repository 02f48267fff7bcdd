// `vdisk detach DISK`: stop serving the disk (every host, or --host-id's) and delete its /dev/ublkbN.
import { Command, Option } from 'clipanion';
import { ControllerCommand } from '../controller-command.js';

export class DetachCommand extends ControllerCommand {
  static override paths = [['detach']];
  static override usage = Command.Usage({ description: 'detach a disk: remove its /dev/ublkbN' });

  name = Option.String({ required: true });
  hostId = Option.String('--host-id', { description: 'only on this host (default: every host it is attached on)' });
  force = Option.Boolean('--force', false, { description: 'forget attachments whose agent is not connected' });

  async run(): Promise<number> {
    const r = await this.call<{ detached: string[] }>('disk.detach', { name: this.name, hostId: this.hostId, force: this.force });
    this.print(`disk ${this.name} detached from ${r.detached.join(', ')}`);
    return 0;
  }
}
