// The vdisk command line as one clipanion Cli: every command class, one per file under commands/. main.ts
// runs it as the `vdisk` binary; tests run the same object in-process (cli.run with their own streams).
import { Builtins, Cli } from 'clipanion';
import { FeaturesCommand } from './commands/features.js';
import { LoopCommand } from './commands/loop.js';
import { ControllerStartCommand } from './commands/controller/start.js';
import { ControllerStopCommand } from './commands/controller/stop.js';
import { ControllerStatusCommand } from './commands/controller/status.js';
import { ContainerAddCommand } from './commands/container/add.js';
import { ContainerFailCommand } from './commands/container/fail.js';
import { ContainerLsCommand } from './commands/container/ls.js';
import { ContainerRmCommand } from './commands/container/rm.js';
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

/** A fresh Cli with every vdisk command registered. */
export function createCli(): Cli {
  const cli = new Cli({ binaryLabel: 'vdisk', binaryName: 'vdisk', binaryVersion: '0.1.0' });
  cli.register(Builtins.HelpCommand);
  cli.register(Builtins.VersionCommand);
  cli.register(LoopCommand);
  cli.register(FeaturesCommand);
  for (const c of [ControllerStartCommand, ControllerStopCommand, ControllerStatusCommand, ContainerAddCommand, ContainerLsCommand,
    ContainerRmCommand, ContainerFailCommand, CreateCommand, LsCommand, InfoCommand, RmCommand,
    AgentStartCommand, AgentStopCommand, AgentLsCommand, AttachCommand, DetachCommand,
    SnapshotCommand, CloneCommand, FoldCommand, CheckCommand, MigrateCommand]) cli.register(c);
  return cli;
}
