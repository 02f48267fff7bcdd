// `vdisk debug failpoints`: the crash points a test can arm with VDISK_FAILPOINT=NAME:N (src/util/failpoints.ts).
// Left out of the help on purpose: it is for crash tests, not for operators.
import { FAILPOINTS } from '../../util/failpoints.js';
import { VdiskCommand } from '../base.js';

export class DebugFailpointsCommand extends VdiskCommand {
  static override paths = [['debug', 'failpoints']];

  async run(): Promise<number> {
    const width = Math.max(...Object.keys(FAILPOINTS).map((k) => k.length));
    for (const [name, what] of Object.entries(FAILPOINTS)) this.context.stdout.write(`${name.padEnd(width)}  ${what}\n`);
    return 0;
  }
}
