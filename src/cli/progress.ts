// The progress line of long commands (migrate, rm, check, fold): drawn on stderr only when stderr is a terminal,
// so results on stdout stay clean and a piped or logged run prints nothing extra. Carriage returns only, no
// escape codes: it is erased by overwriting it with spaces.
import type { Writable } from 'node:stream';

const WIDTH = 30;

export class ProgressLine {
  private shown = 0; // characters of the line now on the terminal

  constructor(private readonly out: Writable, private readonly label: string) {}

  /** A line for a terminal stream, or undefined when the stream is not one (then nothing is drawn). */
  static forStream(out: Writable, label: string): ProgressLine | undefined {
    return (out as NodeJS.WriteStream).isTTY === true ? new ProgressLine(out, label) : undefined;
  }

  update(done: number, total: number, unit: string, extra = ''): void {
    const frac = total > 0 ? Math.min(1, done / total) : 1;
    const fill = Math.round(frac * WIDTH);
    const text = `${this.label} [${'#'.repeat(fill)}${'.'.repeat(WIDTH - fill)}] ${Math.floor(frac * 100)}% ${done}/${total} ${unit}${extra}`;
    this.out.write(`\r${text}${' '.repeat(Math.max(0, this.shown - text.length))}`);
    this.shown = text.length;
  }

  /** Erases the line, leaving the cursor at its start for the result. */
  clear(): void {
    if (this.shown) this.out.write(`\r${' '.repeat(this.shown)}\r`);
    this.shown = 0;
  }
}
