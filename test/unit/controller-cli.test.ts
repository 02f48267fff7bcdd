// The controller process and its CLI commands, end to end on this host (no ublk needed): lifecycle,
// containers, thin and thick disks, refusals that protect data, persistence across restarts, and a
// controller that stays healthy after malformed, wrong-version and unknown requests.
import t from 'tap';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { connect } from '../../src/protocol/client.js';
import { encodeJson } from '../../src/protocol/frame.js';
import { runCli } from '../support/cli.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vdisk-ctl-'));
const sock = path.join(dir, 'controller.sock');
// In-process (the same Cli as the binary); the controller it starts is a real process.
const vdisk = (...args: string[]) => runCli(args, dir);
const json = async <T>(...args: string[]): Promise<T> => JSON.parse((await vdisk(...args, '--json')).out) as T;

t.teardown(async () => {
  await vdisk('controller', 'stop');
  fs.rmSync(dir, { recursive: true, force: true });
});

t.test('lifecycle: status without a controller, start, double start refused, stop twice', async (t) => {
  const none = await vdisk('controller', 'status');
  t.equal(none.status, 2);
  t.match(none.err, /^vdisk: no controller is running/);
  t.equal((await vdisk('controller', 'start')).status, 0);
  const twice = (await vdisk('controller', 'start'));
  t.equal(twice.status, 2, 'a second start is refused');
  t.match(twice.err, /already running/);
  t.match((await vdisk('controller', 'status')).out, /running, pid \d+/);
  t.equal(fs.statSync(sock).mode & 0o777, 0o600, 'socket is 0600');
  t.equal((await vdisk('controller', 'stop')).status, 0);
  t.notOk(fs.existsSync(sock), 'socket removed');
  t.match((await vdisk('controller', 'stop')).out, /no controller was running/);
  t.equal((await vdisk('controller', 'start')).status, 0, 'starts again on the same data');
});

t.test('containers and disks: thin, thick, info, refusals, reclaim', async (t) => {
  const img = path.join(dir, 'c1.img');
  t.equal((await vdisk('container', 'add', 'c1', '--path', img, '--size', '2G')).status, 0);
  t.equal(fs.statSync(img).size, 2 ** 31, 'sparse file created at the requested size');
  t.ok(fs.statSync(img).blocks < 100, 'and it is sparse');
  const missing = (await vdisk('container', 'add', 'c2', '--path', path.join(dir, 'nope.img')));
  t.equal(missing.status, 2);
  t.match(missing.err, /does not exist: give --size/);
  t.equal((await vdisk('container', 'add', 'c1', '--path', img)).status, 2, 'duplicate name refused');

  t.equal((await vdisk('create', 'big', '--size', '1T')).status, 0);
  const info = (await json<{ segments: number; entriesByState: Record<string, number>; allocatedBytes: number }>('info', 'big'));
  t.equal(info.segments, 1048576);
  t.equal(info.entriesByState.zero, 1048576, 'a thin disk is all Zero');
  t.equal(info.allocatedBytes, 0, 'and allocates nothing');

  t.equal((await vdisk('create', 'thick', '--size', '64M', '--segment-size', '4M', '--thick')).status, 0);
  t.equal((await json<{ allocatedBytes: number }>('info', 'thick')).allocatedBytes, 64 << 20);
  t.equal((await json<Array<{ usedBytes: number }>>('container', 'ls'))[0].usedBytes, 64 << 20);
  t.equal((await vdisk('create', 'huge', '--size', '4G', '--thick')).status, 2, 'no space for a thick 4G disk in 2G');

  t.equal((await vdisk('create', 'x', '--size', '1000')).status, 1, 'size not a multiple of 512 is a usage error');
  t.equal((await vdisk('create', 'x', '--size', '1G', '--segment-size', '3M')).status, 1);
  t.equal((await vdisk('create', 'bad name', '--size', '1G')).status, 1, 'a bad name is a usage mistake (it was a failure, exit 2)');
  const busy = (await vdisk('container', 'rm', 'c1'));
  t.equal(busy.status, 2, 'a container in use cannot be removed');
  t.match(busy.err, /in use/);
  t.equal((await vdisk('rm', 'thick')).status, 0);
  t.equal((await json<Array<{ usedBytes: number }>>('container', 'ls'))[0].usedBytes, 0, 'rm returned the storage');
  t.same((await json<Array<{ name: string }>>('ls')).map((d) => d.name), ['big']);
});

t.test('state survives a controller restart', async (t) => {
  t.equal((await vdisk('controller', 'stop')).status, 0);
  t.equal((await vdisk('controller', 'start')).status, 0);
  t.same((await json<Array<{ name: string }>>('ls')).map((d) => d.name), ['big']);
  t.equal((await json<Array<{ name: string }>>('container', 'ls'))[0].name, 'c1');
});

t.test('malformed input is refused and the controller stays healthy', async (t) => {
  // Garbage bytes, then an oversized length prefix, then a truncated frame: each on its own connection.
  for (const bytes of [Buffer.from('GET / HTTP/1.1\r\n\r\n'), Buffer.from([0xff, 0xff, 0xff, 0x7f, 1]), encodeJson({ type: 'hello' }).subarray(0, 7)]) {
    await new Promise<void>((resolve) => {
      const s = net.createConnection(sock, () => s.end(bytes));
      s.on('data', () => {});
      s.on('close', () => resolve());
      s.on('error', () => resolve());
    });
  }
  await t.rejects(connect(sock, { role: 'cli', hostId: 'x'.repeat(300) }), 'an invalid hello is refused');
  const { conn } = await connect(sock, { role: 'cli' });
  await t.rejects(conn.request('disk.create', { name: 'y', size: 'big' }), { code: 'EINVAL' });
  await t.rejects(conn.request('disk.info', { name: 42 }), { code: 'EINVAL' });
  await t.rejects(conn.request('no.such.op', {}), { code: 'EUNKNOWNOP' });
  await t.rejects(conn.request('disk.info', { name: 'nope' }), { code: 'ENOENT' });
  await conn.close();
  const wrongVersion = await new Promise<string>((resolve) => {
    let got = '';
    const s = net.createConnection(sock, () => s.write(encodeJson({ type: 'hello', version: 99, role: 'cli' })));
    s.on('data', (d) => { got += d.toString('latin1'); });
    s.on('close', () => resolve(got));
  });
  t.match(wrongVersion, /EVERSION/, 'a wrong protocol version is answered with EVERSION');
  t.equal((await vdisk('controller', 'status')).status, 0, 'the controller still answers');
});
