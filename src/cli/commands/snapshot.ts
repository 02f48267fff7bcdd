// `vdisk snapshot DISK SNAP`: a read-only, point-in-time copy of DISK that shares all its storage. Safe while
// DISK is attached and written: every agent mapping it drains its in-flight writes before the copy is taken.
import { Command, Option } from 'clipanion';
import { nameOption } from '../base.js';
import { ControllerCommand } from '../controller-command.js';

export class SnapshotCommand extends ControllerCommand {
  static override paths = [['snapshot']];
  static override usage = Command.Usage({
    description: 'take a read-only snapshot of a disk (instant, shares storage)',
    examples: [['Snapshot db1 as db1-monday', '$0 snapshot db1 db1-monday']],
  });

  disk = Option.String({ required: true });
  snapshot = Option.String({ required: true });

  async run(): Promise<number> {
    nameOption('snapshot', this.snapshot);
    await this.call('disk.snapshot', { name: this.disk, snapshot: this.snapshot });
    this.print(`snapshot ${this.snapshot} of ${this.disk} taken`);
    return 0;
  }
}
