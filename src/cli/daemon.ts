// Starting a vdisk daemon (the controller, an agent) in the background: a detached child running
// `vdisk ... --foreground` with its output appended to a log, and success only once the caller's probe
// recognizes that very child (another daemon that won a race is not success).
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import { VdiskError } from '../errors.js';
import { sleep } from '../util/sleep.js';

/**
 * How long a start waits for the daemon to serve: 45 s, or VDISK_START_TIMEOUT seconds. The emulated test VM
 * on a loaded 2-core host has needed more than 45 s for a controller's first answer after a kill -9 (Node's
 * start alone, under TCG, sharing the cores with other VMs); a daemon slower than that is not broken.
 */
export function startTimeoutMs(env: NodeJS.ProcessEnv = process.env): number {
  const s = Number(env.VDISK_START_TIMEOUT);
  return Number.isFinite(s) && s > 0 ? s * 1000 : 45_000;
}

export async function spawnDaemon(what: string, args: string[], log: string, isOurs: (pid: number) => Promise<boolean>, timeoutMs = startTimeoutMs()): Promise<number> {
  const out = fs.openSync(log, 'a');
  const main = fileURLToPath(new URL('./main.js', import.meta.url));
  const child = spawn(process.execPath, [main, ...args, '--foreground'], { detached: true, stdio: ['ignore', out, out] });
  fs.closeSync(out);
  let exited: number | null | undefined;
  child.once('exit', (code) => { exited = code; });
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (exited !== undefined) {
      const tail = fs.readFileSync(log, 'utf8').trim().split('\n').slice(-1)[0] ?? '';
      throw new VdiskError(`the ${what} exited (${exited}) during start: ${tail}`, { code: 'ECHILD' });
    }
    if (child.pid !== undefined && await isOurs(child.pid)) break;
    if (Date.now() > deadline) {
      child.kill('SIGTERM');
      throw new VdiskError(`the ${what} did not come up within ${timeoutMs / 1000} s (see ${log})`, { code: 'ETIMEDOUT' });
    }
    await sleep(50);
  }
  child.unref();
  return child.pid!;
}
