// `vdisk features`: what the running kernel's ublk driver supports (UBLK_U_CMD_GET_FEATURES, 6.5+).
import os from 'node:os';
import { Command, Option } from 'clipanion';
import { VdiskCommand } from '../base.js';

export class FeaturesCommand extends VdiskCommand {
  static override paths = [['features']];
  static override usage = Command.Usage({ description: "list the ublk features of the running kernel" });

  json = Option.Boolean('--json', false, { description: 'print as JSON' });

  async run(): Promise<number> {
    // Loaded here, not at the top: every other command would pay for loading the addon.
    const { UblkControlDevice, featureNames } = await import('../../ublk/control.js');
    const control = UblkControlDevice.open();
    try {
      const flags = await control.getFeatures();
      const names = flags === undefined ? [] : featureNames(flags);
      if (this.json) {
        this.context.stdout.write(JSON.stringify({
          kernel: os.release(), getFeatures: flags !== undefined, flags: flags === undefined ? null : `0x${flags.toString(16)}`, features: names,
        }) + '\n');
      } else if (flags === undefined) {
        this.context.stdout.write(`kernel ${os.release()}: ublk is present, but UBLK_U_CMD_GET_FEATURES is not (it needs Linux 6.5)\n`);
      } else {
        this.context.stdout.write(`kernel ${os.release()}: ublk features 0x${flags.toString(16)}\n${names.map((n) => `  ${n}\n`).join('')}`);
      }
    } finally {
      control.close();
    }
    return 0;
  }
}
