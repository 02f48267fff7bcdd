// `vdisk controller backup FILE`: a consistent copy of the running controller's database, taken online
// (the controller keeps serving meanwhile). Restore it with `vdisk controller restore FILE`.
import path from 'node:path';
import { Command, Option } from 'clipanion';
import { formatSize } from '../../../util/size.js';
import { ControllerCommand } from '../../controller-command.js';

export class ControllerBackupCommand extends ControllerCommand {
  static override paths = [['controller', 'backup']];
  static override usage = Command.Usage({
    description: 'copy the controller\'s database to FILE while it runs',
    examples: [['Nightly backup', '$0 controller backup /backup/vdisk-$(date +%F).db']],
  });

  file = Option.String({ required: true });

  async run(): Promise<number> {
    const r = await this.call<{ path: string; bytes: number }>('controller.backup', { path: path.resolve(this.file) });
    this.print(`backup of the controller database: ${r.path} (${formatSize(r.bytes)})`);
    return 0;
  }
}
