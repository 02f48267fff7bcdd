// `vdisk install-units`: writes the systemd units of the controller and of this host's agent (src/cli/units.ts)
// into a unit directory, for `systemctl daemon-reload` and `systemctl enable --now`.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command, Option } from 'clipanion';
import { hostIdOption } from '../base.js';
import { ControllerCommand } from '../controller-command.js';
import { AGENT_UNIT, CONTROLLER_UNIT, unitFiles } from '../units.js';
import { ensureDir } from '../../util/dirs.js';

export class InstallUnitsCommand extends ControllerCommand {
  static override paths = [['install-units']];
  static override usage = Command.Usage({
    description: 'write systemd units for the controller and this host\'s agent',
    examples: [['Install and start both', '$0 install-units && systemctl daemon-reload && systemctl enable --now vdisk-controller vdisk-agent']],
  });

  dir = Option.String('--dir', { description: 'unit directory (default /etc/systemd/system)' });
  hostId = Option.String('--host-id', { description: 'the agent\'s host id (default: the host name)' });

  async run(): Promise<number> {
    const hostId = hostIdOption(this.hostId);
    const dir = path.resolve(this.dir ?? '/etc/systemd/system');
    const main = fileURLToPath(new URL('../main.js', import.meta.url));
    ensureDir(dir);
    const files = unitFiles({ node: process.execPath, main, dataDir: path.resolve(this.dataDir), hostId });
    for (const [name, text] of Object.entries(files)) {
      fs.writeFileSync(path.join(dir, name), text, { mode: 0o644 });
      this.print(path.join(dir, name));
    }
    this.context.stderr.write(`next: systemctl daemon-reload && systemctl enable --now ${CONTROLLER_UNIT} ${AGENT_UNIT}\n`);
    return 0;
  }
}
