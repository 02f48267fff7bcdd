// Agents on other hosts (issue 13), on real network stacks inside the VM: the controller in namespace ctl with
// its TLS listener on ctl's veth address, agents in h1 and h2 with their own credentials; h2 reaches the
// container only over NBD (qemu-nbd in ctl, the kernel's NBD client in h2) as its --host-path. One disk is
// served on both hosts; a snapshot and copy-on-write with both attached; h2 cut off during fio verify and
// back; kill -9 of the controller with writers on both; refused credentials; a host path to the wrong device.
import t from 'tap';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { Cluster } from './cluster.js';
import { CLI, alive, fioVerify, readDirect, sha256, ublkAvailable, writeDirect } from './helpers.js';
import { topology, type Host, type NsProcess, type Topology } from '../../src/bench/netns.js';
import { fileURLToPath } from 'node:url';

const missing = ublkAvailable();
if (missing) t.fail(`needs a real ublk kernel: ${missing}`);
const MB = 1 << 20;
const PORT = 9420;
const PROBE = fileURLToPath(new URL('./tls-probe.js', import.meta.url));
/** A short lease, so that the partition's fence passes quickly (8.25 s), yet not so short that emulation lapses it. */
const LEASE_S = '5';

interface Net { topo: Topology; c: Cluster; agents: Partial<Record<Host, NsProcess>>; cred: Record<string, string>; listen: string }

/** The controller, in ctl, with its TLS listener on ctl's address (a background start: it outlives the exec). */
function startController(n: Net): void {
  n.topo.exec('ctl', process.execPath, CLI, 'controller', 'start', '--data-dir', n.c.dir, '--listen', n.listen);
}

/** An agent of host h, in h's namespace, connected over TLS with h's credential; the topology owns the process. */
async function startAgent(n: Net, h: 'h1' | 'h2'): Promise<NsProcess> {
  const p = n.topo.spawn(h, process.execPath, [CLI, 'agent', 'start', '--controller', n.listen, '--credential', n.cred[h], '--lease', LEASE_S, '--foreground']);
  n.agents[h] = p;
  await n.c.until(`${h}'s agent to connect over TLS`, async () =>
    p.finished() || (await n.c.json<Array<{ hostId: string }>>('agent', 'ls')).some((a) => a.hostId === h));
  if (p.finished()) throw new Error(`${h}'s agent exited: ${p.stderr()}`);
  return p;
}

async function setup(t: { teardown(fn: () => unknown): void }): Promise<Net> {
  const topo = topology();
  const c = new Cluster('vd-multi');
  const n: Net = { topo, c, agents: {}, cred: {}, listen: `${topo.addr.ctl}:${PORT}` };
  t.teardown(async () => {
    try {
      await c.stop();
    } finally {
      topo.teardown();
    }
  });
  startController(n);
  for (const h of ['h1', 'h2']) {
    n.cred[h] = path.join(c.dir, `${h}.cred`);
    await c.ok('host', 'add', h, '--out', n.cred[h]);
  }
  return n;
}

/** A container file served to h2 over NBD (its host path), added with its label. */
async function nbdContainer(n: Net, name: string, size: string): Promise<{ file: string; nbd: string }> {
  const file = path.join(n.c.dir, `${name}.img`);
  fs.writeFileSync(file, '');
  fs.truncateSync(file, Number(size.replace('M', '')) * MB);
  const nbd = n.topo.connectNbd('h2', n.topo.exportNbd(file, { cache: 'none' }));
  await n.c.ok('container', 'add', name, '--path', file, '--host-path', `h2=${nbd}`);
  return { file, nbd };
}

t.test('one disk on two hosts over TLS, h2 through NBD: data, snapshot, partition, controller kill -9', async (t) => {
  const n = await setup(t);
  const { c, topo } = n;
  await nbdContainer(n, 'c1', '256M');
  await startAgent(n, 'h1');
  await startAgent(n, 'h2');
  const hosts = await c.json<Array<{ hostId: string; remote?: boolean }>>('agent', 'ls');
  t.same(hosts.map((a) => a.hostId).sort(), ['h1', 'h2'], 'both hosts\' agents are connected over TLS');

  // Writes on either host, read on the other (direct I/O; the devices are each host's, the storage shared).
  await c.ok('create', 'd', '--size', '16M');
  const d1 = await c.attach('d', 'h1');
  const d2 = await c.attach('d', 'h2');
  t.not(d1, d2, `two devices: ${d1} on h1, ${d2} on h2`);
  const A = crypto.randomBytes(2 * MB);
  writeDirect(d1, 0, A);
  t.ok(readDirect(d2, 0, 2 * MB).equals(A), 'h2 reads through NBD what h1 wrote');
  const B = crypto.randomBytes(MB);
  writeDirect(d2, 4 * MB, B); // a first write from h2: a map fault over TLS
  t.ok(readDirect(d1, 4 * MB, MB).equals(B), 'h1 reads what h2 wrote');
  const f1 = fioVerify(d1, '2M', ['--offset=8M', '--number_ios=64']);
  t.equal(await f1.done, 0, `fio verify on h1\n${f1.out()}`);

  // A snapshot with the disk on both hosts: the next writes on either host are copy-on-write faults.
  await c.ok('snapshot', 'd', 's');
  const C = crypto.randomBytes(64 * 1024);
  writeDirect(d2, 128 * 1024, C); // h2's copy-on-write fault over TLS
  const after = Buffer.from(A);
  C.copy(after, 128 * 1024);
  t.ok(readDirect(d1, 0, 2 * MB).equals(after), 'h1 reads h2\'s write after the snapshot');
  const s1 = await c.attach('s', 'h1');
  const s2 = await c.attach('s', 'h2');
  t.ok(readDirect(s1, 0, 2 * MB).equals(A), 'the snapshot reads the old data on h1');
  t.ok(readDirect(s2, 0, 2 * MB).equals(A), 'and on h2');
  await c.ok('detach', 's', '--host-id', 'h1');
  await c.ok('detach', 's', '--host-id', 'h2');

  // Partition: h2 cut off during fio verify on h2. It suspends within its lease; a snapshot asked for meanwhile
  // is answered only once h2 has suspended (its log says so before the answer); the link comes back, h2
  // reloads, and fio finishes and verifies.
  const f2 = fioVerify(d2, '2M', ['--offset=10M', '--number_ios=200', '--rate_iops=20']);
  await c.until('fio on h2 to be writing', () => fs.existsSync(d2) && !f2.finished());
  const suspensions = () => (n.agents.h2!.stderr().match(/I\/O suspended/g) ?? []).length;
  const before = suspensions();
  topo.cut('h2');
  const snap = await c.vdisk('snapshot', 'd', 'p');
  t.equal(snap.status, 0, `snapshot while h2 is cut off: ${snap.err}`);
  t.equal(suspensions(), before + 1, 'h2 had suspended its I/O (its lease ran out) before the snapshot was answered');
  topo.restore('h2');
  t.equal(await f2.done, 0, `fio on h2 finished and verified across the partition\n${f2.out()}`);

  // kill -9 of the controller with writers on both hosts; a restart in ctl; nothing acknowledged is lost.
  const w1 = fioVerify(d1, '2M', ['--offset=12M', '--number_ios=200', '--rate_iops=20']);
  const w2 = fioVerify(d2, '2M', ['--offset=14M', '--number_ios=200', '--rate_iops=20']);
  await c.until('both writers to be under way', () => !w1.finished() && !w2.finished());
  const pid = await c.controllerPid();
  process.kill(pid, 'SIGKILL');
  await c.until('the controller to be gone', () => !alive(pid));
  startController(n);
  t.equal(await w1.done, 0, `h1's fio verified across the controller's death\n${w1.out()}`);
  t.equal(await w2.done, 0, `h2's fio verified across the controller's death\n${w2.out()}`);
  t.ok(readDirect(d1, 4 * MB, MB).equals(B), 'what h2 wrote before the kill is still there');
  t.equal(...(await c.check()));
});

t.test('credentials: none, another host\'s, revoked, plaintext, garbage; a host path to the wrong device', async (t) => {
  const n = await setup(t);
  const { c, topo } = n;
  // A stale page cache: c3's label is overwritten on the storage while h2 still has the old label block cached
  // for its NBD device (another process there holds the device open, so the cache outlives every close). h2's
  // agent must read the storage, not its cache: c3 is Error on h2.
  const c3 = await nbdContainer(n, 'c3', '64M');
  const holder = topo.spawn('h2', 'sh', ['-c', `exec 3<${c3.nbd}; dd if=${c3.nbd} of=/dev/null bs=4096 count=1 status=none; echo primed; exec sleep 3600`]);
  await c.until('h2 to have c3\'s label cached', () => holder.stdout().includes('primed') || holder.finished());
  const fd = fs.openSync(c3.file, 'r+');
  fs.writeSync(fd, crypto.randomBytes(4096), 0, 4096, 0);
  fs.fsyncSync(fd);
  fs.closeSync(fd);
  const head = (direct: boolean) => topo.execWith('h2', {}, 'dd', `if=${c3.nbd}`, 'bs=4096', 'count=1', 'status=none', ...(direct ? ['iflag=direct'] : [])).subarray(0, 8).toString('latin1');
  t.equal(head(false), 'VDISKLBL', 'through h2\'s page cache the old label is still there (a cached read would pass it)');
  t.not(head(true), 'VDISKLBL', 'on the storage it is gone');
  // Hostile peers from h1's namespace, each a process of its own (tls-probe.ts), while h2's agent is served.
  await startAgent(n, 'h2');
  const c3Errors = async () => (await c.json<Array<{ name: string; errors: Array<{ hostId: string; problem: string }> }>>('container', 'ls'))
    .find((x) => x.name === 'c3')?.errors ?? [];
  await c.until('h2\'s agent to report on c3', async () => (await c3Errors()).length > 0, 60_000).catch(() => {});
  t.match(await c3Errors(), [{ hostId: 'h2', problem: /label/ }], 'h2\'s agent read the storage: c3 is Error on h2');
  holder.child.kill('SIGKILL');
  await holder.exited;
  const probe = (mode: string) => JSON.parse(topo.exec('h1', process.execPath, PROBE, mode, topo.addr.ctl, String(PORT), n.cred.h1)) as
    { frames: number; welcome: boolean; errors: number; responses: number; error: string };
  const nocert = probe('nocert');
  t.same([nocert.welcome, nocert.frames], [false, 0], `no credential: no welcome, no frame (${nocert.error})`);
  const plain = probe('plain');
  t.same([plain.welcome, plain.frames], [false, 0], 'plaintext on the TLS port: no welcome, no frame');
  const garbage = probe('garbage');
  t.ok(garbage.welcome, 'an authenticated host is welcomed');
  t.equal(garbage.responses, 1000, `each of its 1,000 requests (register, then 999 bad ones) answered (${garbage.errors} error frames)`);
  t.same((await c.json<Array<{ hostId: string }>>('agent', 'ls')).map((a) => a.hostId).sort(), ['h2'], 'h2\'s agent is still served; the garbage host was closed');
  const agentIn = (h: Host, args: string[]) => topo.spawn(h, process.execPath, [CLI, 'agent', 'start', '--controller', n.listen, ...args, '--foreground']);
  const posing = agentIn('h2', ['--credential', n.cred.h2, '--host-id', 'h3']);
  await c.until('h2 posing as h3 to be refused', () => posing.finished() || /refus|EPERM|EACCES/i.test(posing.stderr()));
  t.match(posing.stderr(), /refus|EPERM|EACCES/i, `h2's credential presenting itself as h3: refused (${posing.stderr().trim().split('\n')[0]})`);
  if (!posing.finished()) posing.child.kill('SIGTERM');
  await c.ok('host', 'add', 'h3', '--out', path.join(c.dir, 'h3.cred'));
  await c.ok('host', 'rm', 'h3');
  const revoked = agentIn('h1', ['--credential', path.join(c.dir, 'h3.cred')]);
  await c.until('the revoked credential to be refused', () => revoked.finished() || /refus|certificate|EACCES/i.test(revoked.stderr()));
  t.match(revoked.stderr(), /refus|certificate|EACCES/i, `a revoked credential: refused (${revoked.stderr().trim().split('\n')[0]})`);
  if (!revoked.finished()) revoked.child.kill('SIGTERM');
  t.same((await c.json<Array<{ hostId: string }>>('agent', 'ls')).map((a) => a.hostId), ['h2'], 'no agent got in: only h2\'s is there');

  // c2's path on h2 leads to other storage (a file with no label, over NBD): Error on h2, never served.
  await nbdContainer(n, 'c1', '64M');
  const other = path.join(c.dir, 'other.img');
  fs.writeFileSync(other, crypto.randomBytes(8 * MB));
  const before = sha256(other);
  const otherNbd = topo.connectNbd('h2', topo.exportNbd(other, { cache: 'none' }));
  const file2 = path.join(c.dir, 'c2.img');
  await c.ok('container', 'add', 'c2', '--path', file2, '--size', '64M', '--host-path', `h2=${otherNbd}`);
  await startAgent(n, 'h1');
  await c.ok('create', 'e', '--size', '8M', '--container', 'c2');
  const e1 = await c.attach('e', 'h1');
  const E = crypto.randomBytes(2 * MB);
  writeDirect(e1, 0, E);
  const e2 = await c.attach('e', 'h2');
  let failed = false;
  try {
    readDirect(e2, 0, MB);
  } catch {
    failed = true;
  }
  t.ok(failed, 'a read of c2 on h2 fails (EIO): its label is missing on the storage h2 reaches');
  const c2 = (await c.json<Array<{ name: string; errors: Array<{ hostId: string; problem: string }> }>>('container', 'ls')).find((x) => x.name === 'c2');
  t.match(c2?.errors, [{ hostId: 'h2', problem: /holds no vdisk label/ }], 'the controller knows c2 is Error on h2');
  t.equal(sha256(other), before, 'the wrong storage is unchanged: no byte written to it');
  t.ok(readDirect(e1, 0, 2 * MB).equals(E), 'h1 still serves the disk');
});
