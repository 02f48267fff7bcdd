// Where the controller keeps its state: $VDISK_DATA_DIR, else /var/lib/vdisk for root, else
// ~/.local/share/vdisk. The socket, the database and the log live together in that one directory.
import os from 'node:os';
import path from 'node:path';

export function defaultDataDir(): string {
  if (process.env.VDISK_DATA_DIR) return path.resolve(process.env.VDISK_DATA_DIR);
  if (process.getuid?.() === 0) return '/var/lib/vdisk';
  return path.join(os.homedir(), '.local', 'share', 'vdisk');
}

export const DB_FILE = 'vdisk.db';
export const dbPath = (dataDir: string) => path.join(dataDir, DB_FILE);
export const socketPath = (dataDir: string) => path.join(dataDir, 'controller.sock');
export const logPath = (dataDir: string) => path.join(dataDir, 'controller.log');
export const agentLogPath = (dataDir: string, hostId: string) => path.join(dataDir, `agent-${hostId}.log`);

/**
 * Whether `name`, a file directly in the data dir, is one of the controller's own: the database and what
 * SQLite and `controller restore` keep beside it (vdisk.db*), the socket and log (controller.*), the agents'
 * logs (agent-*.log*). Containers may live in the data dir, never under these names (`container add` refuses
 * them, `vdisk check` reports them). A new file the controller keeps in its data dir must be named here.
 */
export function isControllerFile(name: string): boolean {
  return name.startsWith(DB_FILE) || name.startsWith('controller.') || /^agent-.+\.log/.test(name);
}
