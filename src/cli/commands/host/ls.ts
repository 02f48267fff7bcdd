// `vdisk host ls`: the host credentials the controller issued, live or revoked, and whether each host's
// agent is connected now.
import { Command, Option } from 'clipanion';
import { ControllerCommand, formatTable } from '../../controller-command.js';

interface HostRow { hostId: string; serial: string; issuedAt: string; notAfter: string; revokedAt: string | null; connected: boolean }

export class HostLsCommand extends ControllerCommand {
  static override paths = [['host', 'ls']];
  static override usage = Command.Usage({ description: 'list host credentials' });

  json = Option.Boolean('--json', false, { description: 'print as JSON' });

  async run(): Promise<number> {
    const list = await this.call<HostRow[]>('host.ls');
    if (this.json) this.print(JSON.stringify(list));
    else this.context.stdout.write(formatTable(['HOST', 'STATE', 'AGENT', 'ISSUED', 'EXPIRES'],
      list.map((h) => [h.hostId, h.revokedAt ? `revoked ${h.revokedAt}` : 'valid', h.connected ? 'connected' : '-', h.issuedAt, h.notAfter])));
    return 0;
  }
}
