// systemd units (vdisk install-units): the files name this node and this CLI with absolute paths, run both
// daemons in the foreground with restart on failure, order the agent after the controller, and their
// readiness checks really pass once a real controller answers and a real agent has registered with it.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { AGENT_UNIT, CONTROLLER_UNIT, unitFiles } from '../../src/cli/units.js';
import { runCli } from '../support/cli.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vdisk units-')); // a space: the quoting must hold
const data = path.join(dir, 'data');
const vdisk = (...args: string[]) => runCli(args, data);
t.teardown(async () => {
  await vdisk('agent', 'stop', '--host-id', 'unit-h1');
  await vdisk('controller', 'stop');
  fs.rmSync(dir, { recursive: true, force: true });
});

/** The value of `key=` in a unit; the shell word after `/bin/sh -c`, unescaped ($$, %%) and unquoted, as systemd runs it. */
const field = (unit: string, key: string): string => unit.split('\n').find((l) => l.startsWith(`${key}=`))!.slice(key.length + 1);
const script = (line: string): string => line.replace(/\$\$/g, '$').replace(/%%/g, '%').replace(/^\/bin\/sh -c "/, '').replace(/"$/, '')
  .replace(/\\(["\\])/g, '$1');

t.test('install-units writes both units with absolute paths', async (t) => {
  const units = path.join(dir, 'units');
  const r = await vdisk('install-units', '--dir', units, '--host-id', 'unit-h1');
  t.equal(r.status, 0, r.err);
  t.same(fs.readdirSync(units).sort(), [AGENT_UNIT, CONTROLLER_UNIT]);
  const c = fs.readFileSync(path.join(units, CONTROLLER_UNIT), 'utf8');
  const a = fs.readFileSync(path.join(units, AGENT_UNIT), 'utf8');
  t.match(field(c, 'ExecStart'), new RegExp(`^${process.execPath} .*/cli/main\\.js controller start --foreground --data-dir '${data}'$`));
  t.match(field(a, 'ExecStart'), /agent start --foreground --host-id unit-h1 --data-dir '/);
  t.ok(fs.existsSync(field(c, 'ExecStart').split(' ')[1]), 'the CLI path exists');
  for (const u of [c, a]) {
    t.equal(field(u, 'Restart'), 'on-failure');
    t.equal(field(u, 'Type'), 'simple');
    t.equal(field(u, 'WantedBy'), 'multi-user.target');
  }
  t.equal(field(a, 'After'), CONTROLLER_UNIT, 'the agent starts after the controller');
  t.equal(field(a, 'SuccessExitStatus'), 'SIGKILL', 'an agent that ends itself with SIGKILL (devices left quiesced) stopped cleanly');
  t.equal(field(a, 'Wants'), CONTROLLER_UNIT);
  // systemd's own check, where this machine has it (it parses the command lines, quotes and escapes included).
  const verify = spawnSync('systemd-analyze', ['verify', path.join(units, CONTROLLER_UNIT), path.join(units, AGENT_UNIT)], { encoding: 'utf8' });
  if (verify.error === undefined) t.same([verify.status, verify.stdout + verify.stderr], [0, ''], 'systemd-analyze verify accepts both');
  else t.comment('systemd-analyze is not installed here: the files are checked field by field only');
  t.same(fs.readFileSync(path.join(units, AGENT_UNIT), 'utf8'), unitFiles({ node: process.execPath, main: field(c, 'ExecStart').split(' ')[1], dataDir: data, hostId: 'unit-h1' })[AGENT_UNIT]);
});

t.test('the readiness checks pass against a real controller and agent', async (t) => {
  const u = unitFiles({ node: process.execPath, main: path.resolve(path.dirname(new URL(import.meta.url).pathname), '../../src/cli/main.js'), dataDir: data, hostId: 'unit-h1' });
  t.equal((await vdisk('controller', 'start')).status, 0);
  t.equal(spawnSync('/bin/sh', ['-c', script(field(u[CONTROLLER_UNIT], 'ExecStartPost'))]).status, 0, 'the controller is ready');
  t.equal((await vdisk('agent', 'start', '--host-id', 'unit-h1')).status, 0);
  t.equal(spawnSync('/bin/sh', ['-c', script(field(u[AGENT_UNIT], 'ExecStartPost'))]).status, 0, 'the agent has registered');
  const other = unitFiles({ node: process.execPath, main: '/nonexistent/main.js', dataDir: data, hostId: 'unit-h1' });
  const check = script(field(other[CONTROLLER_UNIT], 'ExecStartPost')).replace('-ge 600', '-ge 3');
  t.equal(spawnSync('/bin/sh', ['-c', check]).status, 1, 'a check that cannot pass fails (so the unit fails and restarts)');
});
