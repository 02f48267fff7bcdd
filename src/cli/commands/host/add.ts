// `vdisk host add HOST [--out FILE]`: issues HOST's credential (its key, its certificate with the host id
// bound in it, the controller's CA to pin) as one file, for `vdisk agent start --credential` on that host.
import fs from 'node:fs';
import { Command, Option } from 'clipanion';
import { VdiskError } from '../../../errors.js';
import { hostIdOption } from '../../base.js';
import { ControllerCommand } from '../../controller-command.js';

interface Issued { hostId: string; serial: string; notAfter: string; credential: string }

export class HostAddCommand extends ControllerCommand {
  static override paths = [['host', 'add']];
  static override usage = Command.Usage({
    description: 'issue a host credential for an agent on another host',
    details: 'The file holds a private key: it is written 0600 and never over an existing file. Without --out it goes to stdout.',
    examples: [['Credential for h2', '$0 host add h2 --out h2.pem']],
  });

  host = Option.String({ required: true });
  out = Option.String('--out', { description: 'write the credential to FILE (0600) instead of stdout' });

  async run(): Promise<number> {
    const hostId = hostIdOption(this.host);
    // Opened before the controller issues anything: an unwritable or existing FILE wastes no credential.
    let fd: number | undefined;
    if (this.out !== undefined) {
      try {
        fd = fs.openSync(this.out, 'wx', 0o600);
      } catch (err) {
        throw VdiskError.from(err, `cannot create ${this.out}`);
      }
    }
    try {
      const r = await this.call<Issued>('host.add', { hostId });
      if (fd === undefined) {
        this.context.stdout.write(r.credential);
        return 0;
      }
      fs.writeSync(fd, r.credential);
      fs.fsyncSync(fd);
      this.print(`host ${hostId}: credential ${this.out} (serial ${r.serial}, valid until ${r.notAfter})`);
      return 0;
    } catch (err) {
      if (fd !== undefined) fs.rmSync(this.out as string, { force: true });
      throw err;
    } finally {
      if (fd !== undefined) fs.closeSync(fd);
    }
  }
}
