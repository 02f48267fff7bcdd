// `vdisk clone SNAP NEWDISK`: a writable disk that starts as the snapshot and shares its storage; its writes
// copy the segments they change (redirect-on-write), so the snapshot never changes.
import { Command, Option } from 'clipanion';
import { ControllerCommand } from '../controller-command.js';

export class CloneCommand extends ControllerCommand {
  static override paths = [['clone']];
  static override usage = Command.Usage({
    description: 'make a writable disk from a snapshot (instant, shares storage)',
    examples: [['A test copy of Monday\'s snapshot', '$0 clone db1-monday db1-test']],
  });

  snapshot = Option.String({ required: true });
  name = Option.String({ required: true });

  async run(): Promise<number> {
    await this.call('disk.clone', { snapshot: this.snapshot, name: this.name });
    this.print(`disk ${this.name} cloned from ${this.snapshot}`);
    return 0;
  }
}
