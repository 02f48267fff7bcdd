#!/usr/bin/env node
// The `vdisk` binary: runs the command line of cli.ts on this process's arguments and exits with its code.
import { createCli } from './cli.js';

void createCli().runExit(process.argv.slice(2));
