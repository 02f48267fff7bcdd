// Bad input leaves nothing behind and never hangs: a refused `container add` leaves no file it made, a
// data dir that cannot exist fails at once, a host without a name still gets a valid id, and an attach that
// fails on a host without ublk stops the agent it started for itself.
import t from 'tap';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { defaultHostId } from '../../src/agent/host-id.js';
import { ensureDir } from '../../src/util/dirs.js';
import { runCli } from '../support/cli.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vdisk-left-'));
const vdisk = (...args: string[]) => runCli(args, dir);
t.teardown(async () => {
  await vdisk('controller', 'stop');
  fs.rmSync(dir, { recursive: true, force: true });
});

t.test('host ids: the short host name, else one from /etc/machine-id, else a clear error', async (t) => {
  const mid = path.join(dir, 'machine-id');
  fs.writeFileSync(mid, '0123456789abcdef0123456789abcdef\n');
  t.equal(defaultHostId('db1.example.net', mid), 'db1');
  t.equal(defaultHostId('(none)', mid), 'host-0123456789ab', 'no host name set: the machine id names the host');
  t.equal(defaultHostId('', mid), 'host-0123456789ab');
  t.throws(() => defaultHostId('(none)', path.join(dir, 'absent')), /set a host name .* or pass --host-id/);
});

t.test('a data dir that cannot be created fails at once, with the reason', async (t) => {
  t.throws(() => ensureDir('/proc/vdisk-no-such-dir/x'), { code: 'ENOENT', message: /cannot create \/proc\/vdisk-no-such-dir/ });
  const r = await runCli(['controller', 'start'], '/proc/vdisk-no-such-dir');
  t.not(r.status, 0, 'controller start fails');
  t.match(r.err, /cannot create \/proc\/vdisk-no-such-dir/);
});

t.test('a refused container add leaves no file; a file that was there stays', async (t) => {
  t.equal((await vdisk('controller', 'start')).status, 0);
  const zero = path.join(dir, 'zero.img');
  const r = await vdisk('container', 'add', 'c0', '--path', zero, '--size', '0');
  t.not(r.status, 0);
  t.match(r.err, /no room after its 1 MiB label/);
  t.notOk(fs.existsSync(zero), 'no 0-byte file left');
  const mine = path.join(dir, 'mine.img');
  fs.writeFileSync(mine, Buffer.alloc(1 << 20, 1));
  t.equal((await vdisk('container', 'add', 'c1', '--path', path.join(dir, 'c1.img'), '--size', '64M')).status, 0);
  t.not((await vdisk('container', 'add', 'c1', '--path', mine)).status, 0, 'a duplicate name is refused');
  t.equal(fs.statSync(mine).size, 1 << 20, 'the file it did not make is untouched');
  const dup = path.join(dir, 'new.img');
  t.not((await vdisk('container', 'add', 'c1', '--path', dup, '--size', '64M')).status, 0);
  t.notOk(fs.existsSync(dup), 'a file made for a refused add is removed');
});

t.test('an attach that fails on a host without ublk stops the agent it started', { skip: fs.existsSync('/dev/ublk-control') ? 'this host has ublk' : false }, async (t) => {
  t.equal((await vdisk('create', 'd1', '--size', '64M')).status, 0);
  const r = await vdisk('attach', 'd1', '--host-id', 'leftover');
  t.not(r.status, 0, 'attach fails without ublk');
  let agents: unknown[] = [{}];
  // The agent exits after agent.stop; its connection closing removes it from the list.
  for (let i = 0; i < 200 && agents.length; i++) {
    agents = JSON.parse((await vdisk('agent', 'ls', '--json')).out) as unknown[];
    if (agents.length) await new Promise((resolve) => setTimeout(resolve, 50));
  }
  t.same(agents, [], 'no agent left running');
});
