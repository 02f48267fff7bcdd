// `vdisk controller start`: runs the controller in the background (or in this process with --foreground)
// and returns once its socket answers.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Command, Option } from 'clipanion';
import { VdiskError } from '../../../errors.js';
import { runController } from '../../../controller/controller.js';
import { logPath, socketPath } from '../../../controller/paths.js';
import { connect } from '../../../protocol/client.js';
import { sleep } from '../../../util/sleep.js';
import { ControllerCommand } from '../../controller-command.js';

export class ControllerStartCommand extends ControllerCommand {
  static override paths = [['controller', 'start']];
  static override usage = Command.Usage({ description: 'start the controller (SQLite tables, map faults, allocation)' });

  foreground = Option.Boolean('--foreground', false, { description: 'run in this process instead of in the background' });

  async run(): Promise<number> {
    if (this.foreground) {
      await runController(this.dataDir);
      return 0;
    }
    const running = await this.status();
    if (running) throw new VdiskError(`a controller is already running (pid ${running.pid}, ${socketPath(this.dataDir)})`, { code: 'EALREADY' });
    fs.mkdirSync(this.dataDir, { recursive: true, mode: 0o700 });
    const log = fs.openSync(logPath(this.dataDir), 'a');
    const main = fileURLToPath(new URL('../../main.js', import.meta.url));
    const child = spawn(process.execPath, [main, 'controller', 'start', '--foreground', '--data-dir', this.dataDir],
      { detached: true, stdio: ['ignore', log, log] });
    fs.closeSync(log);
    let exited: number | null | undefined;
    child.once('exit', (code) => { exited = code; });
    const deadline = Date.now() + 15_000;
    for (;;) {
      if (exited !== undefined) {
        const tail = fs.readFileSync(logPath(this.dataDir), 'utf8').trim().split('\n').slice(-1)[0] ?? '';
        throw new VdiskError(`the controller exited (${exited}) during start: ${tail}`, { code: 'ECHILD' });
      }
      // Only our own child counts: another controller that won a race for the socket is not success.
      if ((await this.status())?.pid === child.pid) break;
      if (Date.now() > deadline) throw new VdiskError('the controller did not answer within 15 s', { code: 'ETIMEDOUT' });
      await sleep(50);
    }
    child.unref();
    this.print(`vdisk controller started (pid ${child.pid}, ${socketPath(this.dataDir)})`);
    return 0;
  }

  private async status(): Promise<{ pid: number } | undefined> {
    try {
      const { conn } = await connect(socketPath(this.dataDir), { role: 'cli', timeoutMs: 1000 });
      try {
        return (await conn.request('controller.status', {})).result as { pid: number };
      } finally {
        await conn.close();
      }
    } catch {
      return undefined;
    }
  }
}
