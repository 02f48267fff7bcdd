// The controller database's backup and restore, and its check at start (a real controller process): a
// backup taken while it runs restores to exactly the state it was taken in; a truncated or corrupted
// database is refused at start with a clear message, never served; a restore puts things right again.
import t from 'tap';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { runCli } from '../support/cli.js';

const MB = 1 << 20;
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vdisk-backup-'));
const data = path.join(dir, 'data');
const db = path.join(data, 'vdisk.db');
const vdisk = (...args: string[]) => runCli(args, data);
const names = async () => (JSON.parse((await vdisk('ls', '--json')).out) as Array<{ name: string }>).map((d) => d.name).sort();
t.teardown(async () => {
  await vdisk('controller', 'stop');
  fs.rmSync(dir, { recursive: true, force: true });
});

t.test('a backup taken while running restores that state exactly', async (t) => {
  t.equal((await vdisk('controller', 'start')).status, 0);
  t.equal((await vdisk('container', 'add', 'c1', '--path', path.join(dir, 'c1.img'), '--size', '64M')).status, 0);
  t.equal((await vdisk('create', 'thick', '--size', '4M', '--thick')).status, 0);
  t.equal((await vdisk('create', 'thin', '--size', '1G')).status, 0);
  const file = path.join(dir, 'b1.db');
  const b = await vdisk('controller', 'backup', file);
  t.equal(b.status, 0, b.err);
  t.match(b.out, /backup of the controller database: .*b1\.db/);
  const again = await vdisk('controller', 'backup', file);
  t.equal(again.status, 2, 'a backup never overwrites a file');
  t.match(again.err, /exists already/);
  t.equal((await vdisk('create', 'later', '--size', '1G')).status, 0);
  t.same(await names(), ['later', 'thick', 'thin']);

  const refused = await vdisk('controller', 'restore', file);
  t.equal(refused.status, 2, 'no restore under a running controller');
  t.match(refused.err, /running: stop it first/);
  t.equal((await vdisk('controller', 'stop')).status, 0);
  const r = await vdisk('controller', 'restore', file);
  t.equal(r.status, 0, r.err);
  t.match(r.err, /kept as .*before-restore/);
  t.equal((await vdisk('controller', 'start')).status, 0);
  t.same(await names(), ['thick', 'thin'], 'the disks of the backup, not the one made after it');
  t.match(JSON.parse((await vdisk('container', 'ls', '--json')).out), [{ name: 'c1', usedBytes: 4 * MB }], 'and its allocations');
  t.equal((await vdisk('check')).status, 0, 'check is clean');
});

t.test('a truncated or corrupted database is refused at start, with the way out', async (t) => {
  const file = path.join(dir, 'b2.db');
  t.equal((await vdisk('controller', 'backup', file)).status, 0);
  t.equal((await vdisk('controller', 'stop')).status, 0);
  const whole = fs.readFileSync(db);
  t.ok(whole.length >= 8 * 4096, `a database of ${whole.length} bytes`);

  fs.truncateSync(db, Math.floor(whole.length / 2));
  let s = await vdisk('controller', 'start');
  t.not(s.status, 0, 'a truncated database does not start');
  t.match(fs.readFileSync(path.join(data, 'controller.log'), 'utf8'), /(is damaged|cannot open the controller database).*restore it from a backup/);
  t.not((await vdisk('controller', 'status')).status, 0, 'and nothing serves it');

  const bad = Buffer.from(whole);
  bad.fill(0x5a, 2 * 4096, 3 * 4096); // one page of garbage in the middle
  fs.writeFileSync(db, bad);
  s = await vdisk('controller', 'start');
  t.not(s.status, 0, 'a corrupted page does not start either');
  t.match(fs.readFileSync(path.join(data, 'controller.log'), 'utf8').split('\n').filter(Boolean).at(-1), /damaged|cannot open|malformed/, 'and says why');

  t.equal((await vdisk('controller', 'restore', file)).status, 0);
  t.equal((await vdisk('controller', 'start')).status, 0, 'restored, it starts');
  t.same(await names(), ['thick', 'thin']);
  t.equal((await vdisk('check')).status, 0);
});
