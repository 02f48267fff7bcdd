// The multi-host topology of netns.ts, proved on the real kernel: TCP between the namespaces, an NBD export
// in ctl read and written through /dev/nbdN in h2, h2 cut off (packets dropped: connects hang, NBD I/O
// stalls and completes once restored; link down: connects fail at once), and a teardown that leaves nothing,
// also when the test process dies.
import t from 'tap';
import crypto from 'node:crypto';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { inflight, makeFile, waitFor } from './helpers.js';
import { running, topology, type Host, type NbdExport } from '../../src/bench/netns.js';

if (process.getuid?.() !== 0) t.fail('needs root (network namespaces)');
const MB = 1 << 20;
const PORT = 7000;
const node = process.execPath;
// An echo server that reports each connection's peer. A prober per host (one node start each: under the VM's
// emulated CPU a start takes seconds) takes "ID TOKEN" lines: it connects to the server, sends TOKEN and prints
// "ID echo TOKEN" once the echo is back, or "ID error CODE"; "ID kill" abandons connection ID.
const SERVER = `const [a, p] = process.argv.slice(1);
require('net').createServer((s) => { console.log('conn ' + s.remoteAddress); s.pipe(s); }).listen(+p, a, () => console.log('listening'));`;
const PROBER = `const [a, p] = process.argv.slice(1); const socks = new Map();
require('readline').createInterface({ input: process.stdin }).on('line', (l) => {
  const [id, token] = l.split(' ');
  if (token === 'kill') { socks.get(id).destroy(); console.log(id + ' killed'); return; }
  let got = ''; const c = require('net').connect(+p, a, () => c.end(token)); socks.set(id, c);
  c.on('data', (d) => { got += d; }); c.on('end', () => console.log(id + ' echo ' + got));
  c.on('error', (e) => console.log(id + ' error ' + e.code));
});
console.log('ready');`;
const sha = (b: Buffer) => crypto.createHash('sha256').update(b).digest('hex');

const topo = topology();
t.teardown(() => topo.teardown());
const server = topo.spawn('ctl', node, ['-e', SERVER, topo.addr.ctl, String(PORT)]);
const probers = {
  h1: topo.spawn('h1', node, ['-e', PROBER, topo.addr.ctl, String(PORT)], { stdin: true }),
  h2: topo.spawn('h2', node, ['-e', PROBER, topo.addr.ctl, String(PORT)], { stdin: true }),
};
const connsFrom = (h: Host) => server.stdout().split('\n').filter((l) => l === `conn ${topo.addr[h]}`).length;
let seq = 0;
/** The prober's answer for `id` so far ('' while it has none). */
const answer = (host: 'h1' | 'h2', id: string) =>
  probers[host].stdout().split('\n').find((l) => l.startsWith(`${id} `))?.slice(id.length + 1) ?? '';
function send(host: 'h1' | 'h2', token: string): string {
  const id = `c${seq++}`;
  probers[host].child.stdin!.write(`${id} ${token}\n`);
  return id;
}
/** A connection from `host` to the server: "echo TOKEN" when it got through, else "error CODE". */
async function echo(host: 'h1' | 'h2', token: string): Promise<string> {
  const id = send(host, token);
  await waitFor(`${host}'s connection ${id} to end`, () => answer(host, id) !== '' || probers[host].finished());
  return answer(host, id);
}
/** Lines of `ss -Htn` in `host` for connections to ctl's `port` in the given state, with -i details. */
const sockets = (host: Host, state: string, port: number) =>
  topo.exec(host, 'ss', '-Htni', 'state', state, 'dst', `${topo.addr.ctl}:${port}`).trim();

t.test('each host has its own address; TCP goes between the namespaces', async (t) => {
  for (const h of ['ctl', 'h1', 'h2'] as const) {
    const addrs = topo.exec(h, 'ip', '-o', '-4', 'addr', 'show').split('\n').filter(Boolean).map((l) => l.split(/\s+/).slice(1, 4).join(' '));
    t.same(addrs, ['lo inet 127.0.0.1/8', `eth0 inet ${topo.addr[h]}/24`], `${h} (${topo.ns[h]}) has lo and eth0 ${topo.addr[h]} only`);
  }
  t.match(topo.addr.ctl, /^10\.77\.\d+\.1$/, 'addresses are in 10.77.N.0/24');
  await waitFor('the echo server in ctl to listen', () => server.stdout().includes('listening') || server.finished());
  t.equal(server.finished(), false, `the server runs in ctl: ${server.stderr()}`);
  for (const h of ['h1', 'h2'] as const) {
    await waitFor(`the prober in ${h}`, () => probers[h].stdout().includes('ready') || probers[h].finished());
    t.equal(probers[h].finished(), false, `the prober runs in ${h}: ${probers[h].stderr()}`);
  }
  t.equal(await echo('h1', 'from-h1'), 'echo from-h1', 'h1 reaches ctl over TCP');
  t.equal(await echo('h2', 'from-h2'), 'echo from-h2', 'h2 too');
  t.equal(connsFrom('h1'), 1, 'the server saw h1\'s address');
  t.equal(connsFrom('h2'), 1, 'and h2\'s');
});

t.test('a host\'s processes share this mount namespace: no copy of other files\' mounts outlives their umount', async (t) => {
  // A private mount namespace per process (ip netns exec) kept a copy of each file system mounted when it
  // started: another test file's umount left it mounted there, and its next mount of the device failed.
  const ns = (pid: number | 'self') => fs.readlinkSync(`/proc/${pid}/ns/mnt`);
  t.equal(ns(probers.h1.pid), ns('self'), 'h1\'s prober');
  t.equal(ns(server.pid), ns('self'), 'ctl\'s server');
  t.not(fs.readlinkSync(`/proc/${probers.h1.pid}/ns/net`), fs.readlinkSync('/proc/self/ns/net'), 'in a network namespace of their own');
});

const file = makeFile('netns-nbd', 4 * MB);
t.teardown(() => fs.rmSync(file, { force: true }));
const pattern = crypto.randomBytes(4 * MB);
fs.writeFileSync(file, pattern);
let dev = '';
let exp: NbdExport | undefined;

t.test('NBD: a file in ctl read and written through /dev/nbdN in h2', async (t) => {
  exp = topo.exportNbd(file);
  dev = topo.connectNbd('h2', exp);
  t.match(dev, /^\/dev\/nbd\d+$/, `h2 attached ${exp.name} from ${exp.addr}:${exp.port} as ${dev}`);
  t.equal(Number(fs.readFileSync(`/sys/block/${path.basename(dev)}/size`, 'utf8')) * 512, 4 * MB, 'of the file\'s size');
  t.not(sockets('h2', 'established', exp.port), '', 'the kernel\'s NBD socket is a TCP connection from h2 to ctl');
  const read = topo.execWith('h2', {}, 'dd', `if=${dev}`, 'bs=1M', 'iflag=direct', 'status=none');
  t.equal(sha(read), sha(pattern), 'an O_DIRECT read in h2 returns the file\'s bytes (sha256)');

  const data = crypto.randomBytes(MB);
  topo.execWith('h2', { input: data }, 'dd', `of=${dev}`, 'bs=1M', 'seek=3', 'oflag=direct', 'conv=fsync', 'status=none');
  data.copy(pattern, 3 * MB);
  const inCtl = topo.execWith('ctl', {}, 'dd', `if=${file}`, 'bs=1M', 'skip=3', 'count=1', 'status=none');
  t.equal(sha(inCtl), sha(data), 'an O_DIRECT write in h2 is in the file in ctl');
  t.equal(sha(fs.readFileSync(file)), sha(pattern), 'and nothing else changed');
});

t.test('h2 cut off (packets dropped), then restored', async (t) => {
  topo.cut('h2');
  t.equal(await echo('h1', 'h1-during-cut'), 'echo h1-during-cut', 'h1 still reaches ctl: only h2 is cut');

  const before = connsFrom('h2');
  const lost = send('h2', 'lost');
  await waitFor('h2\'s connect to be pending', () => sockets('h2', 'syn-sent', PORT) !== '' || answer('h2', lost) !== '');
  t.equal(answer('h2', lost), '', 'h2\'s connect hangs in SYN-SENT');
  t.equal(connsFrom('h2'), before, 'and the server never saw it');
  probers.h2.child.stdin!.write(`${lost} kill\n`);
  await waitFor('the pending connect to be abandoned', () => answer('h2', lost) !== '');
  t.equal(answer('h2', lost), 'killed', 'abandoned');

  // An NBD read while cut: the kernel's NBD socket retransmits unanswered, the request stays in flight.
  const rd = topo.spawn('h2', 'dd', [`if=${dev}`, 'bs=1M', 'skip=2', 'count=2', 'iflag=direct', 'status=none']);
  const nbdPort = exp!.port;
  await waitFor('the NBD socket to retransmit', () => /retrans:[1-9]/.test(sockets('h2', 'established', nbdPort)) || rd.finished());
  t.equal(rd.finished(), false, 'the read in h2 has not completed');
  t.ok(inflight(dev).reads > 0, `${dev} holds the read in flight`);
  topo.restore('h2');
  t.equal(await rd.exited, 0, `once restored, the same read completes: ${rd.stderr()}`);
  t.equal(sha(rd.output()), sha(pattern.subarray(2 * MB, 4 * MB)), 'with the right bytes');
  t.equal(await echo('h2', 'h2-back'), 'echo h2-back', 'and h2 reaches ctl over TCP again');
});

t.test('h2 cut off (link down), then restored', async (t) => {
  topo.cut('h2', 'down');
  t.equal(await echo('h2', 'nope'), 'error ENETUNREACH', 'a connect from h2 fails at once: no route');
  t.equal(await echo('h1', 'h1-still'), 'echo h1-still', 'h1 is not affected');
  topo.restore('h2');
  t.equal(await echo('h2', 'h2-up'), 'echo h2-up', 'restored: the subnet route is back, h2 connects');
  const read = topo.execWith('h2', {}, 'dd', `if=${dev}`, 'bs=1M', 'skip=3', 'count=1', 'iflag=direct', 'status=none');
  t.equal(sha(read), sha(pattern.subarray(3 * MB, 4 * MB)), 'and NBD reads through the same connection');
});

t.test('teardown removes every namespace, device and process', async (t) => {
  t.equal(topo.namespaces().length, 4, `four namespaces before: ${topo.namespaces().join(' ')}`);
  const nbdPid = `/sys/block/${path.basename(dev)}/pid`;
  t.ok(fs.existsSync(nbdPid), `${dev} is connected before`);
  topo.teardown();
  t.same(topo.namespaces(), [], 'no namespace of the topology is left');
  t.notOk(fs.existsSync(nbdPid), `${dev} is disconnected`);
  t.notOk(running(server.pid), 'the echo server in ctl is gone');
  const qemuNbd = fs.readdirSync('/proc').filter((p) => /^\d+$/.test(p) && running(Number(p)))
    .filter((p) => { try { return fs.readFileSync(`/proc/${p}/cmdline`, 'utf8').includes(file); } catch { return false; } });
  t.same(qemuNbd, [], 'no qemu-nbd serves the file any more');
});

t.test('a test process that dies with a topology built leaves nothing of it behind', async (t) => {
  // The 'exit' handler of netns.ts tears down what no t.teardown will: here after an uncaught exception.
  const mod = new URL('../../src/bench/netns.js', import.meta.url).href;
  const script = `import { topology } from ${JSON.stringify(mod)};
const topo = topology(); const p = topo.spawn('h1', 'sleep', ['3600']);
console.log(topo.prefix, topo.namespaces().length, p.pid); throw new Error('a failing test');`;
  const r = spawnSync(node, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 300_000 });
  t.equal(r.status, 1, 'the process failed');
  const [prefix, count, pid] = r.stdout.trim().split(' ');
  t.equal(count, '4', `after building ${prefix}: ${r.stderr}`);
  const left = spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' }).stdout.split('\n').filter((l) => l.startsWith(`${prefix}-`));
  t.same(left, [], 'its namespaces are gone');
  t.notOk(running(Number(pid)), 'and so is the process it had started in h1');
});
