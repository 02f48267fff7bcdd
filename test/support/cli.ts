// Runs a vdisk command in this process through the same clipanion Cli as the binary (src/cli/cli.ts): about
// 10 ms instead of a node start per call. Output is captured; the exit code is what the binary would exit
// with. Daemons that a command starts (controller, agent) are still real processes.
import { Writable } from 'node:stream';
import { createCli } from '../../src/cli/cli.js';

export interface CliResult { status: number; out: string; err: string }

class Capture extends Writable {
  text = '';
  override _write(chunk: Buffer | string, _enc: BufferEncoding, done: (err?: Error | null) => void): void {
    this.text += chunk.toString();
    done();
  }
}

const cli = createCli();

/**
 * `vdisk ARGS [--data-dir DIR]`, in-process. stderr is trimmed, stdout is as printed. `ttyStderr` makes
 * stderr claim to be a terminal (isTTY), as an interactive shell's is; its text is then kept untrimmed.
 */
export async function runCli(args: string[], dataDir?: string, o: { ttyStderr?: boolean } = {}): Promise<CliResult> {
  const stdout = new Capture();
  const stderr = new Capture();
  if (o.ttyStderr) Object.assign(stderr, { isTTY: true });
  const status = await cli.run(dataDir === undefined ? args : [...args, '--data-dir', dataDir], { stdout, stderr, colorDepth: 1 });
  return { status, out: stdout.text, err: o.ttyStderr ? stderr.text : stderr.text.trim() };
}
