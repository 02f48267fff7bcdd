// Shared behaviour of every vdisk command: user mistakes are clipanion UsageErrors (exit 1, with usage);
// failures of the system print one line "vdisk: ..." and exit 2, never a stack trace.
import { Command, UsageError } from 'clipanion';
import { checkHostId, defaultHostId } from '../agent/host-id.js';
import { parseSize } from '../util/size.js';
import { COW_MODES, PARTIAL_MODES, type Modes } from '../controller/modes.js';
import { checkName } from '../controller/names.js';

export abstract class VdiskCommand extends Command {
  abstract run(): Promise<number>;

  async execute(): Promise<number> {
    try {
      return await this.run();
    } catch (err) {
      if (err instanceof UsageError) {
        // On stderr (clipanion would print it on stdout, mixed with results), with this command's usage.
        this.context.stderr.write(this.cli.error(err, { command: this }));
        return 1;
      }
      const message = err instanceof Error ? err.message : String(err);
      this.context.stderr.write(`vdisk: ${message}\n`);
      if (process.env.VDISK_DEBUG && err instanceof Error) this.context.stderr.write(`${err.stack}\n`);
      return 2;
    }
  }
}

export function intOption(name: string, text: string | undefined, def: number, min: number, max: number): number {
  if (text === undefined) return def;
  const v = Number(text);
  if (!/^\d+$/.test(text.trim()) || !Number.isSafeInteger(v) || v < min || v > max) {
    throw new UsageError(`${name} must be a whole number from ${min} to ${max}, not "${text}"`);
  }
  return v;
}

/** HOST:PORT of a listening option (IPv6 in brackets); a usage error otherwise. */
export function hostPort(name: string, text: string): { host: string; port: number } {
  const m = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/.exec(text);
  const port = m ? Number(m[2]) : NaN;
  if (!m || port > 65535) throw new UsageError(`${name} must be HOST:PORT (for example 127.0.0.1:9420), not "${text}"`);
  return { host: m[1].replace(/^\[|\]$/g, ''), port };
}

/** A required option: checked here so that leaving it out says so (clipanion reports "command not found"). */
export function requireOption(name: string, value: string | undefined): string {
  if (value === undefined) throw new UsageError(`${name} is required`);
  return value;
}

/** A container, disk or snapshot name, checked before anything is sent: a bad one is a usage mistake. */
export function nameOption(kind: string, name: string): string {
  try {
    checkName(kind, name);
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  return name;
}

/** --host-id, defaulting to this host's name; a malformed id is a usage error. */
export function hostIdOption(text: string | undefined): string {
  const hostId = text ?? defaultHostId();
  try {
    checkHostId(hostId);
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  return hostId;
}

/**
 * --host-path HOST=PATH (repeatable): the path a host reaches a container by. PATH is made absolute here
 * only when it is already absolute (it names a file on that host, not here); an empty PATH (HOST=) clears it
 * where `clearing` allows, i.e. that host uses the container's own path again.
 */
export function hostPathsOption(items: string[] | undefined, clearing: boolean): Record<string, string | null> {
  const out: Record<string, string | null> = {};
  for (const item of items ?? []) {
    const eq = item.indexOf('=');
    if (eq < 0) throw new UsageError(`--host-path takes HOST=PATH, not ${item}`);
    const host = hostIdOption(item.slice(0, eq));
    const p = item.slice(eq + 1);
    if (p === '' && clearing) out[host] = null;
    else if (!p.startsWith('/')) throw new UsageError(`--host-path ${item}: the path must be absolute (it names a file on host ${host})`);
    else out[host] = p;
  }
  return out;
}

/** --cow and --partial of create and clone, checked here so a typo is a usage error, not a controller one. */
export function modesOption(cow: string | undefined, partial: string | undefined): Modes {
  if (cow !== undefined && !(COW_MODES as readonly string[]).includes(cow)) throw new UsageError(`--cow must be ${COW_MODES.join(' or ')}, not ${cow}`);
  if (partial !== undefined && !(PARTIAL_MODES as readonly string[]).includes(partial)) throw new UsageError(`--partial must be ${PARTIAL_MODES.join(' or ')}, not ${partial}`);
  return { cow: cow as Modes['cow'], partial: partial as Modes['partial'] };
}

export const COW_HELP = 'copy-on-write: the writer gets a new segment (redirect, default) or the other sharers do (copy-out)';
export const PARTIAL_HELP = 'partial writes to a shared segment: only their 4 KiB blocks to an alternate location (bitmap, default) or a whole-segment copy (copy)';

export function sizeOption(name: string, text: string | undefined, def: number): number {
  if (text === undefined) return def;
  try {
    return parseSize(text);
  } catch (err) {
    throw new UsageError(`${name}: ${(err as Error).message}`);
  }
}
