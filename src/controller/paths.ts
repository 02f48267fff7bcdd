// Where the controller keeps its state: $VDISK_DATA_DIR, else /var/lib/vdisk for root, else
// ~/.local/share/vdisk. The socket, the database and the log live together in that one directory.
import os from 'node:os';
import path from 'node:path';

export function defaultDataDir(): string {
  if (process.env.VDISK_DATA_DIR) return path.resolve(process.env.VDISK_DATA_DIR);
  if (process.getuid?.() === 0) return '/var/lib/vdisk';
  return path.join(os.homedir(), '.local', 'share', 'vdisk');
}

export const socketPath = (dataDir: string) => path.join(dataDir, 'controller.sock');
export const logPath = (dataDir: string) => path.join(dataDir, 'controller.log');
export const agentLogPath = (dataDir: string, hostId: string) => path.join(dataDir, `agent-${hostId}.log`);
