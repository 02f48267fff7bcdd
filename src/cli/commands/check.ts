// `vdisk check`: verifies the controller's invariants (references, reference counts, exclusive ownership, free
// extents). Exit 0 when they hold, 2 with one line per problem when they do not.
import { Command, Option } from 'clipanion';
import type { CheckReport } from '../../controller/check.js';
import { ControllerCommand } from '../controller-command.js';

export class CheckCommand extends ControllerCommand {
  static override paths = [['check']];
  static override usage = Command.Usage({ description: 'verify the controller\'s tables and reference counts' });

  json = Option.Boolean('--json', false, { description: 'print as JSON' });

  async run(): Promise<number> {
    const r = await this.callLong<CheckReport>('check', {}, 'checking');
    if (this.json) this.print(JSON.stringify(r));
    else {
      this.print(`${r.disks} disk(s), ${r.allocations} allocated segment(s), ${r.references} reference(s): ${r.ok ? 'consistent' : `${r.problems.length} problem(s)`}`);
      for (const p of r.problems) this.context.stderr.write(`vdisk: ${p}\n`);
    }
    return r.ok ? 0 : 2;
  }
}
