// The controller's side of container labels and per-host paths, with a real in-process controller: the label
// written at add (allocation after its reserve), storage already labelled refused, the label wiped at rm,
// containers from before labels left as they were, each agent sent its own host's path, and a real agent's
// report of a container it holds in Error shown by `container ls` and `info`.
import t from 'tap';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { Agent } from '../../src/agent/agent.js';
import { socketPath } from '../../src/controller/paths.js';
import type { Container, Disk } from '../../src/controller/store.js';
import { identify } from '../../src/controller/container-identity.js';
import { LABEL_BYTES, LABEL_RESERVED_BYTES, decodeLabel, encodeLabel, newUuid, writeLabelAt } from '../../src/label/container-label.js';
import { FAULT_WRITE } from '../../src/protocol/fault-ops.js';
import { STATE_ZERO } from '../../src/table/mapping-table.js';
import { runCli } from '../support/cli.js';
import { scriptedController, sleep, type Peer } from '../support/scripted-agent.js';

const MB = 1 << 20;
const { dir, controller, ask, scriptedAgent } = await scriptedController(t, 'vdisk-labels-');
const digest = (p: string): string => crypto.createHash('sha256').update(fs.readFileSync(p)).digest('hex');
const head = (p: string): Buffer => fs.readFileSync(p).subarray(0, LABEL_BYTES);
type Listed = Container & { errors: Array<{ hostId: string; problem: string }> };
const listed = async (name: string): Promise<Listed> => (await ask<Listed[]>('container.ls')).find((c) => c.name === name)!;
/** The containers a scripted agent was last told about. */
const told = (p: Peer) => p.got.filter((g) => g.op === 'containers.set').at(-1)?.args.containers as Array<Record<string, unknown>>;

const c1path = path.join(dir, 'c1.img');
let c1: Container;

t.test('container add labels the storage; its segments start after the 1 MiB reserve', async (t) => {
  c1 = await ask<Container>('container.add', { name: 'c1', path: c1path, size: 4 * MB });
  t.match(c1.uuid, /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/, 'a UUID');
  t.same(decodeLabel(head(c1path)), { uuid: c1.uuid, size: 4 * MB, name: 'c1' }, 'the label at byte 0 names it');
  const d = await ask<Disk>('disk.create', { name: 'd1', size: 3 * MB, thick: true, container: 'c1' });
  const offsets = (await controller.store.tables.getEntries(d, 0, 3)).map((e) => e.offset).sort((a, b) => a - b);
  t.same(offsets, [MB, 2 * MB, 3 * MB], 'the whole container after the reserve, and nothing in it');
  t.equal(LABEL_RESERVED_BYTES, MB);
  await t.rejects(ask('disk.create', { name: 'd2', size: MB, thick: true, container: 'c1' }), { code: 'ENOSPC' }, 'and no more');
  t.match(await ask('check'), { ok: true, problems: [] });
});

t.test('storage that already holds a vdisk label is refused, and left as it was', async (t) => {
  const copy = path.join(dir, 'copy.img');
  fs.copyFileSync(c1path, copy); // another file (identity differs) holding c1's label
  const sum = digest(copy);
  await t.rejects(ask('container.add', { name: 'cx', path: copy }), { code: 'EEXIST', message: /holds the label of container c1/ }, 'c1 recognized by what it holds');
  t.equal(digest(copy), sum);
  const foreign = path.join(dir, 'foreign.img');
  const b = Buffer.alloc(4 * MB, 0x33);
  encodeLabel({ uuid: newUuid(), size: 4 * MB, name: 'elsewhere' }).copy(b);
  fs.writeFileSync(foreign, b);
  await t.rejects(ask('container.add', { name: 'cy', path: foreign, size: 8 * MB }), { code: 'EEXIST', message: /container elsewhere .* this controller does not know/ });
  t.ok(fs.readFileSync(foreign).equals(b), 'not grown, not a byte of what it held changed');
  await t.rejects(ask('container.add', { name: 'cz', path: path.join(dir, 'small.img'), size: MB }), { code: 'EINVAL', message: /no room after its 1 MiB label/ });
  t.notOk(fs.existsSync(path.join(dir, 'small.img')), 'a refused add leaves no file');
});

t.test('a label that a crashed add left (its intent recorded first) does not block adding the storage again', async (t) => {
  const p = path.join(dir, 'crashed.img');
  fs.writeFileSync(p, Buffer.alloc(2 * MB));
  const uuid = newUuid();
  // What an add that died between writing its label and committing leaves behind.
  await controller.store.recordLabelIntent(uuid, p);
  await writeLabelAt(p, encodeLabel({ uuid, size: 2 * MB, name: 'crashed' }));
  const c = await ask<Container>('container.add', { name: 'crashed', path: p });
  t.not(c.uuid, uuid, 'added, under a new label');
  t.match(decodeLabel(head(p)), { uuid: c.uuid });
  t.same([...await controller.store.labelIntents()], [], 'and no intent is left');
  await ask('container.rm', { name: 'crashed' });
});

t.test('container rm wipes the label: the storage can be added again', async (t) => {
  const p = path.join(dir, 'again.img');
  const c = await ask<Container>('container.add', { name: 'again', path: p, size: 2 * MB });
  t.match(decodeLabel(head(p)), { uuid: c.uuid });
  await ask('container.rm', { name: 'again' });
  t.ok(head(p).equals(Buffer.alloc(LABEL_BYTES)), 'the label block is zeros');
  const back = await ask<Container>('container.add', { name: 'again', path: p });
  t.not(back.uuid, c.uuid, 'added again, under a new label');
});

t.test('a container from before labels keeps offset-0 allocation and is sent without a label', async (t) => {
  const p = path.join(dir, 'old.img');
  fs.writeFileSync(p, Buffer.alloc(2 * MB));
  // As a database from before schema 7 holds it: no uuid, next_unit 0.
  const old = await controller.store.addContainer('old', p, 2 * MB, identify(p).key);
  t.equal(old.uuid, null);
  const d = await ask<Disk>('disk.create', { name: 'dold', size: 2 * MB, thick: true, container: 'old' });
  t.same((await controller.store.tables.getEntries(d, 0, 2)).map((e) => e.offset).sort((a, b) => a - b), [0, MB], 'its data starts at 0, as before');
  const h = await scriptedAgent('hold', 9);
  t.same(told(h).find((c) => c.id === old.id), { id: old.id, path: p }, 'no label to check');
  t.match(told(h).find((c) => c.id === c1.id), { uuid: c1.uuid, size: 4 * MB }, 'a labelled one comes with its label');
  t.match(await ask('check'), { ok: true });
});

t.test('per-host paths: each agent is sent the path of its own host', async (t) => {
  const h1 = await scriptedAgent('h1', 1);
  const h2 = await scriptedAgent('h2', 2);
  const p = path.join(dir, 'shared.img');
  const c = await ask<Container>('container.add', { name: 'lun', path: p, size: 2 * MB, hostPaths: { h2: '/dev/on-h2' } });
  t.same(c.hostPaths, { h2: '/dev/on-h2' });
  const pathTo = (peer: Peer) => told(peer).find((x) => x.id === c.id)?.path;
  t.equal(pathTo(h1), p, 'h1: the container\'s path');
  t.equal(pathTo(h2), '/dev/on-h2', 'h2: its own');
  await ask('container.set', { name: 'lun', hostPaths: { h1: '/dev/on-h1', h2: '/dev/moved' } });
  t.same([pathTo(h1), pathTo(h2)], ['/dev/on-h1', '/dev/moved'], 'changed later, on both');
  await ask('container.set', { name: 'lun', hostPaths: { h2: null } });
  t.same([pathTo(h1), pathTo(h2)], ['/dev/on-h1', p], 'cleared: h2 back on the container\'s path');
  t.same((await listed('lun')).hostPaths, { h1: '/dev/on-h1' });
  for (const [hostPaths, what] of [[{}, 'nothing to change'], [{ h2: 'rel.img' }, 'a relative path'], [{ 'no host': '/x' }, 'a bad host id'], [[], 'not an object']] as const) {
    await t.rejects(ask('container.set', { name: 'lun', hostPaths }), { code: 'EINVAL' }, `refused: ${what}`);
  }
  await t.rejects(ask('container.set', { name: 'nope', hostPaths: { h2: '/x' } }), { code: 'ENOENT' });
  const usage = await runCli(['container', 'set', 'lun', '--host-path', 'h2'], dir);
  t.equal(usage.status, 1, '--host-path without = is a usage error');
  t.equal((await runCli(['container', 'set', 'lun'], dir)).status, 1, 'so is no --host-path');
  const r = await runCli(['container', 'set', 'lun', '--host-path', 'h2=/dev/sdz', '--json'], dir);
  t.equal(r.status, 0, r.err);
  t.same((JSON.parse(r.out) as Container).hostPaths, { h1: '/dev/on-h1', h2: '/dev/sdz' });
  await ask('container.rm', { name: 'lun' }); // its rows in container_paths go too
  t.same(await controller.store.db.all('SELECT * FROM container_paths WHERE container_id = ?', [c.id]), []);
});

t.test('an agent that finds the wrong label reports it; container ls and info show the Error', async (t) => {
  const wrong = path.join(dir, 'wrong.img');
  fs.writeFileSync(wrong, Buffer.alloc(4 * MB, 0x77));
  const sum = digest(wrong);
  const logs: string[] = [];
  const agent = new Agent({ controller: socketPath(dir), hostId: 'h3', leaseMs: 5000, log: (m) => logs.push(m) });
  await agent.start();
  t.teardown(() => agent.stop());
  for (let i = 0; i < 250 && !controller.agents.get('h3'); i++) await sleep(20);
  await ask('container.set', { name: 'c1', hostPaths: { h3: wrong } });
  t.match((await listed('c1')).errors, [{ hostId: 'h3', problem: /wrong\.img holds no vdisk label, not this container's label/ }]);
  t.same((await listed('again')).errors, [], 'its other containers are fine there');
  t.match(await ask('disk.info', { name: 'd1' }), { containerErrors: [{ container: 'c1', hostId: 'h3', problem: /no vdisk label/ }] });
  const text = await runCli(['container', 'ls'], dir);
  t.match(text.out, /c1 .*Error on h3/);
  t.match(text.out, /c1 is in Error on host h3: /);
  await ask('container.set', { name: 'c1', hostPaths: { h3: null } });
  t.same((await listed('c1')).errors, [], 'on its right path it is served');
  t.same((await ask<{ containerErrors: unknown[] }>('disk.info', { name: 'd1' })).containerErrors, []);
  t.equal(digest(wrong), sum, 'the wrong file was not written');
});

t.test('a labelled container whose path lost its label: check reports it, the controller writes nothing there', async (t) => {
  const p = path.join(dir, 'lost.img');
  const c = await ask<Container>('container.add', { name: 'lost', path: p, size: 4 * MB });
  const label = head(p);
  const fd = fs.openSync(p, 'r+');
  fs.writeSync(fd, Buffer.alloc(LABEL_BYTES), 0, LABEL_BYTES, 0); // what another device at this path would hold
  fs.writeSync(fd, Buffer.alloc(3 * MB, 0x99), 0, 3 * MB, MB);
  const sum = digest(p);
  t.match(await ask('check'), { ok: false, problems: [new RegExp(`container lost: .*lost\\.img holds no vdisk label, not its label ${c.uuid}`)] });
  const d = await ask<Disk>('disk.create', { name: 'dl', size: 2 * MB, container: 'lost' });
  const h = await scriptedAgent('hl', 11);
  await t.rejects(h.conn.request('fault', { diskId: d.id, op: FAULT_WRITE, segment: 0, states: STATE_ZERO }), { message: /container lost: .* holds no vdisk label/ },
    'a first write there is not zeroed on the wrong storage');
  t.equal(digest(p), sum, 'not a byte written');
  t.match(await ask('disk.info', { name: 'dl' }), { allocatedBytes: 0 }, 'nor anything mapped');
  fs.writeSync(fd, label, 0, LABEL_BYTES, 0);
  fs.closeSync(fd);
  t.match(await h.conn.request('fault', { diskId: d.id, op: FAULT_WRITE, segment: 0, states: STATE_ZERO }), { result: { action: 'entry', allocated: true } }, 'its label back: served');
  t.match(await ask('check'), { ok: true });
});
