// `vdisk migrate DISK --to CONTAINER`: moves every segment of a disk to another container while it stays
// attached and in use. A progress bar on a TTY, JSON lines otherwise. The job lives in the controller: if
// this command is interrupted, or the controller restarts, the migration carries on.
import { Command, Option } from 'clipanion';
import type { MigrationProgress } from '../../controller/migrate.js';
import { requireOption } from '../base.js';
import { ControllerCommand } from '../controller-command.js';

export class MigrateCommand extends ControllerCommand {
  static override paths = [['migrate']];
  static override usage = Command.Usage({
    description: 'move a disk\'s storage to another container, live',
    examples: [['Move db1 onto container fast', '$0 migrate db1 --to fast']],
  });

  name = Option.String({ required: true });
  to = Option.String('--to', { description: 'the container to move to (required)' });
  json = Option.Boolean('--json', false, { description: 'progress as JSON lines (the default when stdout is not a TTY)' });

  async run(): Promise<number> {
    const to = requireOption('--to', this.to);
    const conn = await this.connect();
    const tty = !this.json && (this.context.stdout as NodeJS.WriteStream).isTTY === true;
    conn.onEvent((name, data) => {
      if (name !== 'migrate.progress') return;
      const p = data as MigrationProgress;
      if (!tty) this.print(JSON.stringify({ progress: p }));
      else {
        const width = 30;
        const fill = Math.round((p.done / Math.max(1, p.total)) * width);
        this.context.stdout.write(`\r[${'#'.repeat(fill)}${' '.repeat(width - fill)}] ${p.done}/${p.total} segments, ${p.moved} moved`);
      }
    });
    try {
      const r = (await conn.request('disk.migrate', { name: this.name, to }, { timeoutMs: 0 })).result as MigrationProgress;
      if (tty) this.context.stdout.write('\n');
      this.print(tty ? `disk ${r.disk} is on ${r.to}: ${r.moved} segment(s) moved` : JSON.stringify({ done: r }));
      return 0;
    } finally {
      await conn.close();
    }
  }
}
