// The vdisk command line as one clipanion Cli: every command class, one per file under commands/. main.ts
// runs it as the `vdisk` binary; tests run the same object in-process (cli.run with their own streams).
// Conventions on top of clipanion's: results on stdout, every error and usage text on stderr; colours only
// on a terminal and never with NO_COLOR; exit 1 for a usage mistake, 2 for a failure; an unknown command
// names the nearest real ones; a negative value (`--size -5G`) reaches the option's own check.
import { Builtins, Cli, type BaseContext, type Command } from 'clipanion';
import { FeaturesCommand } from './commands/features.js';
import { LoopCommand } from './commands/loop.js';
import { ControllerStartCommand } from './commands/controller/start.js';
import { ControllerStopCommand } from './commands/controller/stop.js';
import { ControllerStatusCommand } from './commands/controller/status.js';
import { ContainerAddCommand } from './commands/container/add.js';
import { ContainerFailCommand } from './commands/container/fail.js';
import { ContainerLsCommand } from './commands/container/ls.js';
import { ContainerRmCommand } from './commands/container/rm.js';
import { ContainerSetCommand } from './commands/container/set.js';
import { CreateCommand } from './commands/create.js';
import { InfoCommand } from './commands/info.js';
import { LsCommand } from './commands/ls.js';
import { RmCommand } from './commands/rm.js';
import { AgentLsCommand } from './commands/agent/ls.js';
import { AgentStartCommand } from './commands/agent/start.js';
import { AgentStopCommand } from './commands/agent/stop.js';
import { AttachCommand } from './commands/attach.js';
import { DetachCommand } from './commands/detach.js';
import { CheckCommand } from './commands/check.js';
import { CloneCommand } from './commands/clone.js';
import { FoldCommand } from './commands/fold.js';
import { SnapshotCommand } from './commands/snapshot.js';
import { MigrateCommand } from './commands/migrate.js';
import { InstallUnitsCommand } from './commands/install-units.js';
import { DebugFailpointsCommand } from './commands/debug-failpoints.js';
import { ControllerBackupCommand } from './commands/controller/backup.js';
import { ControllerRestoreCommand } from './commands/controller/restore.js';
import { StatsCommand } from './commands/stats.js';
import { HostAddCommand } from './commands/host/add.js';
import { HostLsCommand } from './commands/host/ls.js';
import { HostRmCommand } from './commands/host/rm.js';

/** Colours only when stdout is a terminal and the user did not ask for none (https://no-color.org). */
export function colorsWanted(env: Record<string, string | undefined> = process.env, tty = process.stdout.isTTY === true): boolean {
  if (env.NO_COLOR !== undefined && env.NO_COLOR !== '') return false;
  if (env.FORCE_COLOR === '0') return false;
  return tty;
}

/** Edit distance, for suggesting the command a typo meant. */
function distance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) row[j] = Math.min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    prev = row;
  }
  return prev[b.length];
}

export class VdiskCli extends Cli {
  override async run(input: Array<string> | Command<BaseContext>, given?: Partial<BaseContext> | void): Promise<number> {
    const userContext: Partial<BaseContext> = given ?? {};
    if (!Array.isArray(input)) return super.run(input, { ...Cli.defaultContext, ...userContext });
    const context: BaseContext = { ...Cli.defaultContext, colorDepth: this.enableColors ? Cli.defaultContext.colorDepth : 1, ...userContext };
    const args = joinNegativeValues(input);
    let command;
    try {
      command = this.process(args, context);
    } catch (err) {
      context.stderr.write(this.unknownCommand(args) ?? this.error(err, { colored: context.colorDepth > 1 }));
      return 1;
    }
    return super.run(command, context);
  }

  /** "unknown command" with the nearest real ones, when the words name no command at all. */
  private unknownCommand(args: string[]): string | undefined {
    const words = args.filter((a, i) => !a.startsWith('-') && args[i - 1] !== '--data-dir');
    if (words.length === 0) return undefined;
    const paths = this.definitions().map((d) => d.path.split(' ').slice(1)).filter((p) => p.length > 0);
    const group = paths.some((p) => p[0] === words[0] && p.length >= 2); // container, agent, controller
    const depth = group ? 2 : 1;
    const typed = words.slice(0, depth);
    if (paths.some((p) => p.length === depth && typed.every((w, i) => p[i] === w))) return undefined; // a real command: clipanion's message
    const candidates = paths.filter((p) => p.length === depth || !group);
    const scored = candidates.map((p) => ({ p, d: distance(typed.join(' '), p.join(' ')) })).sort((a, b) => a.d - b.d);
    const best = [...new Set(scored.filter((x) => x.d <= Math.max(2, scored[0]?.d ?? 0)).slice(0, 3).map((x) => x.p.join(' ')))];
    return `vdisk: unknown command "${typed.join(' ')}"${best.length ? `; did you mean: ${best.map((b) => `vdisk ${b}`).join(', ')}?` : ''}\n` +
      'Run vdisk --help for the list of commands.\n';
  }
}

/** `--opt -5G` as `--opt=-5G`: clipanion takes a leading '-' for an option and never shows the value to its check. */
export function joinNegativeValues(args: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    if (/^--[a-z][a-z-]*$/.test(args[i]) && i + 1 < args.length && /^-\d/.test(args[i + 1])) {
      out.push(`${args[i]}=${args[i + 1]}`);
      i++;
    } else {
      out.push(args[i]);
    }
  }
  return out;
}

/** A fresh Cli with every vdisk command registered. */
export function createCli(): Cli {
  const cli = new VdiskCli({ binaryLabel: 'vdisk', binaryName: 'vdisk', binaryVersion: '0.1.0', enableColors: colorsWanted() });
  cli.register(Builtins.HelpCommand);
  cli.register(Builtins.VersionCommand);
  cli.register(LoopCommand);
  cli.register(FeaturesCommand);
  for (const c of [ControllerStartCommand, ControllerStopCommand, ControllerStatusCommand, ControllerBackupCommand, ControllerRestoreCommand, ContainerAddCommand, ContainerLsCommand,
    ContainerRmCommand, ContainerSetCommand, ContainerFailCommand, CreateCommand, LsCommand, InfoCommand, RmCommand,
    AgentStartCommand, AgentStopCommand, AgentLsCommand, AttachCommand, DetachCommand,
    SnapshotCommand, CloneCommand, FoldCommand, CheckCommand, MigrateCommand, InstallUnitsCommand, DebugFailpointsCommand, StatsCommand,
    HostAddCommand, HostLsCommand, HostRmCommand]) cli.register(c);
  return cli;
}
