// Base of every command that talks to the controller: --data-dir, one connection per invocation, and remote
// errors printed as one line (exit 2) by VdiskCommand. Also the plain-text table printer of the listings.
import { Option } from 'clipanion';
import { connect } from '../protocol/client.js';
import type { Connection } from '../protocol/connection.js';
import { defaultDataDir, socketPath } from '../controller/paths.js';
import { PROGRESS_EVENT, type ProgressEvent } from '../protocol/progress.js';
import { VdiskCommand } from './base.js';
import { ProgressLine } from './progress.js';

export abstract class ControllerCommand extends VdiskCommand {
  dataDirOption = Option.String('--data-dir', { description: 'controller data directory (default: $VDISK_DATA_DIR, /var/lib/vdisk as root, else ~/.local/share/vdisk)' });

  get dataDir(): string {
    return this.dataDirOption ?? defaultDataDir();
  }

  /** Sends one request to the controller and returns its result. */
  async call<T>(op: string, args: Record<string, unknown> = {}): Promise<T> {
    const conn = await this.connect();
    try {
      return (await conn.request(op, args)).result as T;
    } finally {
      await conn.close();
    }
  }

  /**
   * A request that may run long (rm of a large snapshot, check of a large pool): no client-side timeout (the
   * controller answers or the connection drops), and a progress line on stderr when that is a terminal.
   */
  async callLong<T>(op: string, args: Record<string, unknown>, label: string): Promise<T> {
    const conn = await this.connect();
    const line = ProgressLine.forStream(this.context.stderr, label);
    if (line) conn.onEvent((name, data) => {
      const p = data as ProgressEvent;
      if (name === PROGRESS_EVENT) line.update(p.done, p.total, p.unit);
    });
    try {
      return (await conn.request(op, { ...args, progress: line !== undefined }, { timeoutMs: 0 })).result as T;
    } finally {
      line?.clear();
      await conn.close();
    }
  }

  async connect(): Promise<Connection> {
    return (await connect(socketPath(this.dataDir), { role: 'cli' })).conn;
  }

  print(text: string): void {
    this.context.stdout.write(text.endsWith('\n') ? text : `${text}\n`);
  }
}

/** Left-aligned columns; numbers right-aligned. */
export function formatTable(header: string[], rows: Array<Array<string | number>>): string {
  const cells = [header, ...rows.map((r) => r.map(String))];
  const widths = header.map((_, i) => Math.max(...cells.map((r) => r[i].length)));
  return cells.map((r, ri) => r.map((c, i) => (ri > 0 && typeof rows[ri - 1][i] === 'number' ? c.padStart(widths[i]) : c.padEnd(widths[i])))
    .join('  ').trimEnd()).join('\n') + '\n';
}
