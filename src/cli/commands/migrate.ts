// `vdisk migrate DISK --to CONTAINER`: moves every segment of a disk to another container while it stays
// attached and in use. A progress line on stderr when that is a terminal, JSON lines with --json, otherwise
// only the result. The job lives in the controller: if
// this command is interrupted, or the controller restarts, the migration carries on.
import { Command, Option } from 'clipanion';
import type { MigrationProgress } from '../../controller/migrate.js';
import { requireOption } from '../base.js';
import { ControllerCommand } from '../controller-command.js';
import { ProgressLine } from '../progress.js';

export class MigrateCommand extends ControllerCommand {
  static override paths = [['migrate']];
  static override usage = Command.Usage({
    description: 'move a disk\'s storage to another container, live',
    examples: [['Move db1 onto container fast', '$0 migrate db1 --to fast']],
  });

  name = Option.String({ required: true });
  to = Option.String('--to', { description: 'the container to move to (required)' });
  json = Option.Boolean('--json', false, { description: 'progress and result as JSON lines' });

  async run(): Promise<number> {
    const to = requireOption('--to', this.to);
    const conn = await this.connect();
    const line = ProgressLine.forStream(this.context.stderr, `migrating ${this.name} to ${to}`);
    conn.onEvent((name, data) => {
      if (name !== 'migrate.progress') return;
      const p = data as MigrationProgress;
      if (this.json) this.print(JSON.stringify({ progress: p }));
      else line?.update(p.done, p.total, 'segments', `, ${p.moved} moved`);
    });
    try {
      const r = (await conn.request('disk.migrate', { name: this.name, to }, { timeoutMs: 0 })).result as MigrationProgress;
      line?.clear();
      this.print(this.json ? JSON.stringify({ done: r }) : `disk ${r.disk} is on ${r.to}: ${r.moved} segment(s) moved`);
      return 0;
    } finally {
      line?.clear();
      await conn.close();
    }
  }
}
