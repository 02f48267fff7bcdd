// `vdisk controller start`: runs the controller in the background (or in this process with --foreground)
// and returns once its socket answers. --listen adds the mutual-TLS port for agents on other hosts.
import { Command, Option } from 'clipanion';
import { VdiskError } from '../../../errors.js';
import { logPath, socketPath } from '../../../controller/paths.js';
import { connect } from '../../../protocol/client.js';
import { ControllerCommand } from '../../controller-command.js';
import { spawnDaemon } from '../../daemon.js';
import { ensureDir } from '../../../util/dirs.js';
import { hostPort } from '../../base.js';

export class ControllerStartCommand extends ControllerCommand {
  static override paths = [['controller', 'start']];
  static override usage = Command.Usage({ description: 'start the controller (SQLite tables, map faults, allocation)' });

  foreground = Option.Boolean('--foreground', false, { description: 'run in this process instead of in the background' });
  metrics = Option.String('--metrics', { description: 'also serve Prometheus metrics at http://HOST:PORT/metrics' });
  listen = Option.String('--listen', { description: 'also accept agents of other hosts on ADDR:PORT (TLS 1.3, host credentials only)' });

  async run(): Promise<number> {
    const metrics = this.metrics === undefined ? undefined : hostPort('--metrics', this.metrics);
    const listen = this.listen === undefined ? undefined : hostPort('--listen', this.listen);
    if (this.foreground) {
      // Loaded here, not at the top: every other command would pay for the controller and sqlite3.
      const { runController } = await import('../../../controller/controller.js');
      await runController(this.dataDir, { metrics, listen });
      return 0;
    }
    const running = await this.status();
    if (running) throw new VdiskError(`a controller is already running (pid ${running.pid}, ${socketPath(this.dataDir)})`, { code: 'EALREADY' });
    ensureDir(this.dataDir);
    const pid = await spawnDaemon('controller', ['controller', 'start', '--data-dir', this.dataDir, ...(this.metrics ? ['--metrics', this.metrics] : []),
      ...(this.listen ? ['--listen', this.listen] : [])], logPath(this.dataDir),
      async (child) => (await this.status())?.pid === child);
    this.print(`vdisk controller started (pid ${pid}, ${socketPath(this.dataDir)}${this.listen ? `, TLS on ${this.listen}` : ''})`);
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
