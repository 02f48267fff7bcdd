// The container label (src/label) and the agent's check of it (src/agent/containers.ts), on real files:
// the format and what counts as a mismatch, and an agent that serves a container only where its label is
// found (a wrong, missing or short one is Error there: no fd published, the storage's bytes untouched).
import t from 'tap';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { AgentContainers } from '../../src/agent/containers.js';
import { LABEL_BYTES, decodeLabel, encodeLabel, labelProblem, newUuid } from '../../src/label/container-label.js';

const MB = 1 << 20;
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vdisk-label-'));
t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
const digest = (p: string): string => crypto.createHash('sha256').update(fs.readFileSync(p)).digest('hex');

/** A container file of `size` bytes with a label (or none) and a pattern after it. */
function file(name: string, size: number, label?: { uuid: string; size: number }): string {
  const p = path.join(dir, name);
  const b = Buffer.alloc(size, 0x6b);
  if (label) encodeLabel({ ...label, name }).copy(b, 0);
  fs.writeFileSync(p, b);
  return p;
}

t.test('format: a label reads back; anything else is named for what it is', async (t) => {
  const uuid = newUuid();
  const b = encodeLabel({ uuid, size: 3 * MB, name: 'c1' });
  t.equal(b.length, LABEL_BYTES);
  t.equal(b.subarray(0, 8).toString('latin1'), 'VDISKLBL', 'the magic first');
  t.same(decodeLabel(b), { uuid, size: 3 * MB, name: 'c1' });
  t.equal(labelProblem(b, { uuid, size: 3 * MB }), null, 'the expected container');
  t.match(labelProblem(b, { uuid: newUuid(), size: 3 * MB }), /label of another container \(c1, /);
  t.match(labelProblem(b, { uuid, size: 2 * MB }), /size 3145728, not 2097152/);
  t.equal(labelProblem(Buffer.alloc(LABEL_BYTES), { uuid, size: 3 * MB }), 'no vdisk label');
  const bent = Buffer.from(b);
  bent[40] ^= 1; // one bit of the data start
  t.match(labelProblem(bent, { uuid, size: 3 * MB }), /bad checksum/);
  t.match(decodeLabel(encodeLabel({ uuid, size: MB, name: 'x'.repeat(100) })), { name: 'x'.repeat(64) }, 'a long name is cut, not spilled');
});

t.test('agent: a labelled container is served only where its label is found', async (t) => {
  const uuid = newUuid();
  const good = file('good.img', 2 * MB, { uuid, size: 2 * MB });
  const other = file('other.img', 2 * MB, { uuid: newUuid(), size: 2 * MB });
  const blank = file('blank.img', 2 * MB);
  const short = file('short.img', 2 * MB - 4096, { uuid, size: 2 * MB });
  const sums = { other: digest(other), blank: digest(blank), short: digest(short) };
  const logs: string[] = [];
  const cs = new AgentContainers();
  t.teardown(() => cs.close());
  const ref = (p: string) => [{ id: 5, path: p, uuid, size: 2 * MB }];

  let r = cs.update(ref(good), (m) => logs.push(m));
  t.ok(cs.fds[5] >= 0, 'its own storage: served');
  t.same(r.errors, []);
  const goodFd = cs.fds[5];

  r = cs.update(ref(other), (m) => logs.push(m));
  t.equal(cs.fds[5], -1, 'another container\'s storage: not served (its segments get EIO)');
  t.same(r.retired, [goodFd], 'the old fd is retired (closed by the caller after a barrier)');
  cs.retire(r.retired);
  t.match(r.errors, [{ id: 5, problem: /holds the label of another container \(other\.img, .*not served on this host/ }]);
  t.match(logs.at(-1), /container 5: .*other\.img holds the label of another container/);

  r = cs.update(ref(blank), () => {});
  t.equal(cs.fds[5], -1);
  t.match(r.errors, [{ id: 5, problem: /holds no vdisk label/ }], 'no label: Error');
  r = cs.update(ref(short), () => {});
  t.equal(cs.fds[5], -1);
  t.match(r.errors, [{ id: 5, problem: /holds only 2093056 bytes, its label says 2097152/ }], 'shorter than its label says: Error');
  r = cs.update(ref(path.join(dir, 'missing.img')), () => {});
  t.match(r.errors, [{ id: 5, problem: /cannot use .*missing\.img/ }], 'a path that names nothing here: Error');

  r = cs.update(ref(good), () => {});
  t.ok(cs.fds[5] >= 0, 'the path fixed: served again');
  t.same(r.errors, []);
  r = cs.update([], () => {});
  t.same(r.errors, [], 'a container no longer listed has no Error either');
  cs.retire(r.retired);
  t.same({ other: digest(other), blank: digest(blank), short: digest(short) }, sums, 'nothing written to the wrong storage');
});

t.test('agent: a container from before labels is served as before, without a label', async (t) => {
  const legacy = file('legacy.img', MB);
  const cs = new AgentContainers();
  t.teardown(() => cs.close());
  const r = cs.update([{ id: 2, path: legacy }], () => {});
  t.ok(cs.fds[2] >= 0, 'served');
  t.same(r.errors, []);
});
