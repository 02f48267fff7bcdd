// The vdisk command line's conventions, in-process and as a real process (no controller needed): results on
// stdout and every error or usage text on stderr, no colour codes off a terminal or with NO_COLOR, exit 1
// for each usage mistake (named precisely), and an unknown command that suggests the real ones.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { colorsWanted, joinNegativeValues } from '../../src/cli/cli.js';
import { runCli } from '../support/cli.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vdisk-conv-'));
t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
const vdisk = (...args: string[]) => runCli(args, dir);
const main = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));
const ESC = '\x1b[';

t.test('usage mistakes: exit 1, on stderr, naming what is wrong', async (t) => {
  const cases: Array<[string[], RegExp]> = [
    [['create', 'd9'], /--size is required/],
    [['create', 'd9', '--size', '-5G'], /--size: "-5G" is not a size/],
    [['create', 'd9', '--size', '8P'], /--size: "8P" is too large/],
    [['create', 'd9', '--size', '300T'], /over the limit of 256T for 1M segments.*larger --segment-size/],
    [['create', 'bad name', '--size', '1G'], /disk name "bad name" must be/],
    [['container', 'add', 'c1'], /--path is required/],
    [['container', 'add', 'c 1', '--path', '/tmp/x'], /container name "c 1" must be/],
    [['migrate', 'd1'], /--to is required/],
    [['snapshot', 'd1', 'bad/snap'], /snapshot name "bad\/snap" must be/],
    [['clone', 's1', '-x'], /./],
  ];
  for (const [args, message] of cases) {
    const r = await vdisk(...args);
    t.equal(r.status, 1, `vdisk ${args.join(' ')}: exit 1`);
    t.equal(r.out, '', '  nothing on stdout');
    t.match(r.err, message, `  stderr: ${r.err.split('\n')[0]}`);
  }
});

t.test('an unknown command names the nearest real ones', async (t) => {
  const r = await vdisk('creat', 'd1');
  t.equal(r.status, 1);
  t.equal(r.out, '');
  t.match(r.err, /unknown command "creat"; did you mean: vdisk create\?/);
  t.match((await vdisk('container', 'lss')).err, /did you mean: vdisk container ls\?/);
  t.match((await vdisk('snapshto', 'a', 'b')).err, /vdisk snapshot/);
  const missing = await vdisk('create', 'd9', '--size');
  t.equal(missing.status, 1, 'a real command with a bad option');
  t.match(missing.err, /Not enough arguments to option --size/, 'gets clipanion\'s own message, not "unknown command"');
  t.match((await vdisk('--data-dir', dir, 'creat')).err, /unknown command "creat"/, 'the --data-dir value is not taken for a command');
});

t.test('a failure of the system exits 2 with one line on stderr', async (t) => {
  const r = await vdisk('info', 'd1');
  t.equal(r.status, 2);
  t.equal(r.out, '');
  t.match(r.err, /^vdisk: no controller is running/);
});

t.test('colours: only on a terminal, never with NO_COLOR', async (t) => {
  t.equal(colorsWanted({}, true), true, 'a terminal');
  t.equal(colorsWanted({}, false), false, 'a pipe');
  t.equal(colorsWanted({ NO_COLOR: '1' }, true), false, 'NO_COLOR on a terminal');
  t.equal(colorsWanted({ NO_COLOR: '' }, true), true, 'an empty NO_COLOR means nothing (no-color.org)');
  t.equal(colorsWanted({ FORCE_COLOR: '0' }, true), false);
  for (const args of [['--help'], ['create', 'd9'], ['creat']]) {
    const p = spawnSync(process.execPath, [main, ...args, ...(args[0] === '--help' ? [] : ['--data-dir', dir])], { encoding: 'utf8', env: { ...process.env, NO_COLOR: undefined, FORCE_COLOR: undefined } });
    t.notOk(p.stdout.includes(ESC) || p.stderr.includes(ESC), `vdisk ${args.join(' ')} | cat: no escape codes`);
    if (args[0] === '--help') t.match(p.stdout, /vdisk create/, 'help is on stdout');
    else t.equal(p.status, 1, 'and exit 1 from the real process');
  }
});

t.test('negative values reach the option\'s own check', async (t) => {
  t.same(joinNegativeValues(['create', 'd', '--size', '-5G', '--thick']), ['create', 'd', '--size=-5G', '--thick']);
  t.same(joinNegativeValues(['rm', '-5']), ['rm', '-5'], 'a positional stays as it is');
  t.same(joinNegativeValues(['--size', '--thick']), ['--size', '--thick'], 'an option after an option stays an option');
});
