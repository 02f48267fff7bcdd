#!/usr/bin/env node
// The vdisk command line: one clipanion command class per file under commands/.
import { Builtins, Cli } from 'clipanion';
import { FeaturesCommand } from './commands/features.js';
import { LoopCommand } from './commands/loop.js';

const cli = new Cli({ binaryLabel: 'vdisk', binaryName: 'vdisk', binaryVersion: '0.1.0' });
cli.register(Builtins.HelpCommand);
cli.register(Builtins.VersionCommand);
cli.register(LoopCommand);
cli.register(FeaturesCommand);
void cli.runExit(process.argv.slice(2));
