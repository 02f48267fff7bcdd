// Container labels on a real kernel, two host ids on one machine: host h2's path for container c1 names
// another container's storage (c2, whose label is not c1's). On h2, c1 is Error: its segments fail with EIO
// for reads and writes, nothing of c2 is read into the disk or changed (sha256), the controller shows the
// Error, and h1 serves the same disk with its data. Pointing h2 back at c1's storage serves it there too.
import t from 'tap';
import crypto from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { Cluster } from './cluster.js';
import { readDirect, sha256, ublkAvailable, writeDirect } from './helpers.js';

const missing = ublkAvailable();
if (missing) t.fail(`needs a real ublk kernel: ${missing}`);
const MB = 1 << 20;

/** dd's complaint when a direct 4 KiB read or write at `off` fails, '' when it succeeds. */
function ddFails(dev: string, off: number, write: boolean): string {
  const io = write ? ['if=/dev/urandom', `of=${dev}`, `seek=${off / 4096}`, 'oflag=direct', 'conv=notrunc']
    : [`if=${dev}`, 'of=/dev/null', `skip=${off / 4096}`, 'iflag=direct'];
  const r = spawnSync('dd', [...io, 'bs=4096', 'count=1', 'status=none'], { encoding: 'utf8' });
  return r.status === 0 ? '' : r.stderr;
}

t.test('a host whose path for a container names other storage holds it in Error, and touches none of it', async (t) => {
  const c = await Cluster.start('vd-labels');
  t.teardown(() => c.stop());
  await c.container('c1', '128M');
  const wrong = await c.container('c2', '128M'); // labelled as c2: the wrong label for c1
  await c.ok('create', 'd1', '--size', '32M', '--container', 'c1');
  await c.ok('container', 'set', 'c1', '--host-path', `h2=${wrong}`);
  const d1 = await c.attach('d1', 'h1');
  const data = crypto.randomBytes(MB);
  for (const seg of [1, 2, 5]) writeDirect(d1, seg * MB, data);
  const before = sha256(wrong);

  const d2 = await c.attach('d1', 'h2');
  for (const seg of [1, 2, 5]) t.match(ddFails(d2, seg * MB, false), /Input\/output error/, `h2: a read of segment ${seg} (on c1) gives EIO`);
  t.match(ddFails(d2, 2 * MB + 8192, true), /Input\/output error/, 'h2: a write to a mapped segment gives EIO');
  t.match(ddFails(d2, 9 * MB, true), /Input\/output error/, 'h2: a write that allocates a segment on c1 gives EIO');
  t.ok(readDirect(d2, 3 * MB, 4096).equals(Buffer.alloc(4096)), 'h2: a Zero segment still reads zeros (no I/O)');
  t.equal(sha256(wrong), before, 'not a byte of c2\'s storage changed');
  for (const seg of [1, 2, 5]) t.ok(readDirect(d1, seg * MB, MB).equals(data), `h1 still serves segment ${seg}`);
  t.ok(readDirect(d1, 9 * MB, 4096).equals(Buffer.alloc(4096)), 'h1 reads zeros where h2\'s write failed');

  const ls = await c.json<Array<{ name: string; errors: Array<{ hostId: string; problem: string }> }>>('container', 'ls');
  t.match(ls.find((x) => x.name === 'c1')?.errors, [{ hostId: 'h2', problem: /label of another container \(c2/ }], 'container ls: c1 is Error on h2');
  t.same(ls.find((x) => x.name === 'c2')?.errors, [], 'c2 itself is fine everywhere');
  const info = await c.json<{ containerErrors: Array<{ container: string; hostId: string }> }>('info', 'd1');
  t.match(info.containerErrors, [{ container: 'c1', hostId: 'h2' }], 'vdisk info names it');
  t.match(await c.ok('info', 'd1'), /ERROR\s+container c1 on host h2/);

  await c.ok('container', 'set', 'c1', '--host-path', 'h2=');
  for (const seg of [1, 2, 5]) t.ok(readDirect(d2, seg * MB, MB).equals(data), `h2 on c1's own path serves segment ${seg}`);
  t.same((await c.json<Array<{ name: string; errors: unknown[] }>>('container', 'ls')).find((x) => x.name === 'c1')?.errors, [], 'and c1 is no longer Error there');
  t.equal(sha256(wrong), before, 'c2 is still untouched');
  t.equal(...await c.check());
});
