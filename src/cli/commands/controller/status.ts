// `vdisk controller status`: whether a controller answers, and what it holds.
import { Command, Option } from 'clipanion';
import { ControllerCommand } from '../../controller-command.js';

interface Status { pid: number; version: string; dataDir: string; disks: number; containers: number; listen?: { host: string; port: number } }

export class ControllerStatusCommand extends ControllerCommand {
  static override paths = [['controller', 'status']];
  static override usage = Command.Usage({ description: 'show whether the controller is running' });

  json = Option.Boolean('--json', false, { description: 'print as JSON' });

  async run(): Promise<number> {
    const s = await this.call<Status>('controller.status');
    this.print(this.json ? JSON.stringify(s)
      : `vdisk controller ${s.version} running, pid ${s.pid}, data dir ${s.dataDir}${s.listen ? `, TLS on ${s.listen.host}:${s.listen.port}` : ''}: ` +
        `${s.containers} container(s), ${s.disks} disk(s)`);
    return 0;
  }
}
