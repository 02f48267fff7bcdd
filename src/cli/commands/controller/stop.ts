// `vdisk controller stop`: asks the controller to stop and waits until its socket is gone.
import fs from 'node:fs';
import { Command } from 'clipanion';
import { VdiskError } from '../../../errors.js';
import { socketPath } from '../../../controller/paths.js';
import { sleep } from '../../../util/sleep.js';
import { ControllerCommand } from '../../controller-command.js';

export class ControllerStopCommand extends ControllerCommand {
  static override paths = [['controller', 'stop']];
  static override usage = Command.Usage({ description: 'stop the controller (disks keep serving mapped I/O until the agents\' lease runs out)' });

  async run(): Promise<number> {
    try {
      await this.call('controller.stop');
    } catch (err) {
      if ((err as VdiskError).code === 'ENOENT' || (err as VdiskError).code === 'ECONNREFUSED') {
        this.print('no controller was running');
        return 0;
      }
      throw err;
    }
    const deadline = Date.now() + 10_000;
    while (fs.existsSync(socketPath(this.dataDir))) {
      if (Date.now() > deadline) throw new VdiskError('the controller did not stop within 10 s', { code: 'ETIMEDOUT' });
      await sleep(50);
    }
    this.print('vdisk controller stopped');
    return 0;
  }
}
