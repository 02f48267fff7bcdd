// `vdisk controller restore FILE`: puts a backup in place of the stopped controller's database, after
// checking that the backup is whole. The database it replaces is kept beside it, renamed.
import fs from 'node:fs';
import path from 'node:path';
import { Command, Option, UsageError } from 'clipanion';
import { VdiskError } from '../../../errors.js';
import { Db } from '../../../controller/db.js';
import { checkIntegrity } from '../../../controller/store.js';
import { dbPath, socketPath } from '../../../controller/paths.js';
import { connect } from '../../../protocol/client.js';
import { ensureDir } from '../../../util/dirs.js';
import { ControllerCommand } from '../../controller-command.js';

export class ControllerRestoreCommand extends ControllerCommand {
  static override paths = [['controller', 'restore']];
  static override usage = Command.Usage({ description: 'replace the stopped controller\'s database with a backup' });

  file = Option.String({ required: true });

  async run(): Promise<number> {
    const backup = path.resolve(this.file);
    if (!fs.existsSync(backup)) throw new UsageError(`no backup at ${backup}`);
    const running = await connect(socketPath(this.dataDir), { role: 'cli', timeoutMs: 1000 }).then(async (c) => { await c.conn.close(); return true; }, () => false);
    if (running) throw new VdiskError('the controller is running: stop it first (vdisk controller stop)', { code: 'EBUSY' });
    const db = await Db.open(backup).catch((err: Error) => { throw new VdiskError(`${backup} is not a vdisk database: ${err.message}`, { code: 'EDBCORRUPT' }); });
    try {
      await checkIntegrity(db, backup);
    } finally {
      await db.close();
    }
    ensureDir(this.dataDir);
    const target = dbPath(this.dataDir);
    // The replaced database is kept, with its WAL (a crashed controller leaves committed data there).
    const kept = `${target}.before-restore-${new Date().toISOString().replace(/[:.]/g, '-')}`;
    let keptAny = false;
    for (const side of ['', '-wal', '-shm']) {
      if (!fs.existsSync(target + side)) continue;
      fs.renameSync(target + side, kept + side);
      keptAny = true;
    }
    if (keptAny) this.context.stderr.write(`the replaced database is kept as ${kept}\n`);
    fs.copyFileSync(backup, target);
    this.print(`restored ${backup} as ${target}; start the controller with: vdisk controller start`);
    return 0;
  }
}
