// `vdisk clone SNAP NEWDISK`: a writable disk that starts as the snapshot and shares its storage; its writes
// copy what they change (see --cow and --partial), so the snapshot never changes.
import { Command, Option } from 'clipanion';
import { COW_HELP, PARTIAL_HELP, modesOption, nameOption } from '../base.js';
import { ControllerCommand } from '../controller-command.js';

export class CloneCommand extends ControllerCommand {
  static override paths = [['clone']];
  static override usage = Command.Usage({
    description: 'make a writable disk from a snapshot (instant, shares storage)',
    examples: [['A test copy of Monday\'s snapshot', '$0 clone db1-monday db1-test']],
  });

  snapshot = Option.String({ required: true });
  name = Option.String({ required: true });
  cow = Option.String('--cow', { description: `${COW_HELP}; default: the snapshot's` });
  partial = Option.String('--partial', { description: `${PARTIAL_HELP}; default: the snapshot's` });

  async run(): Promise<number> {
    nameOption('disk', this.name);
    await this.call('disk.clone', { snapshot: this.snapshot, name: this.name, ...modesOption(this.cow, this.partial) });
    this.print(`disk ${this.name} cloned from ${this.snapshot}`);
    return 0;
  }
}
