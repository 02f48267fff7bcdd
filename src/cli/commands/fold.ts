// `vdisk fold DISK`: turns every segment with an alternate location (blocks written after a snapshot with
// --partial bitmap) into a plain private segment now, rather than when the controller gets to it.
import { Command, Option } from 'clipanion';
import { ControllerCommand } from '../controller-command.js';

export class FoldCommand extends ControllerCommand {
  static override paths = [['fold']];
  static override usage = Command.Usage({
    description: 'fold partially rewritten shared segments into private copies',
    details: 'Safe while the disk is attached and written. The controller also folds a segment by itself once half of its blocks were rewritten.',
    examples: [['Fold db1', '$0 fold db1']],
  });

  name = Option.String({ required: true });
  json = Option.Boolean('--json', false, { description: 'print as JSON' });

  async run(): Promise<number> {
    const r = await this.callLong<{ folded: number }>('disk.fold', { name: this.name }, `folding ${this.name}`);
    this.print(this.json ? JSON.stringify(r) : `disk ${this.name}: ${r.folded} segment(s) folded`);
    return 0;
  }
}
