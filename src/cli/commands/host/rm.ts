// `vdisk host rm HOST`: revokes HOST's credential. Its next handshake is refused and its live connections
// are closed at once; its devices wait, quiesced, like those of a lost agent.
import { Command, Option } from 'clipanion';
import { hostIdOption } from '../../base.js';
import { ControllerCommand } from '../../controller-command.js';

export class HostRmCommand extends ControllerCommand {
  static override paths = [['host', 'rm']];
  static override usage = Command.Usage({ description: 'revoke a host credential (its agent is disconnected)' });

  host = Option.String({ required: true });

  async run(): Promise<number> {
    const hostId = hostIdOption(this.host);
    const r = await this.call<{ closed: number }>('host.rm', { hostId });
    this.print(`host ${hostId}: credential revoked${r.closed ? `, ${r.closed} connection(s) closed` : ''}`);
    return 0;
  }
}
