// Claims made by queue workers (src/io/claim-ring.ts) and collected by the grant pool (src/agent/grant-pool.ts):
// a claim is in the claims file before its entry is installed; nothing is claimed while a fault of its segment is out or from
// an entry that is not exactly Zero; and real worker threads claiming while the main thread confirms and
// rewrites the file lose no claim and repeat none.
import t from 'tap';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import { CLAIM_RECORD_BYTES, COW_COPY, COW_WHOLE, ClaimRing, decodeClaim } from '../../src/io/claim-ring.js';
import { SYNC_MAPPED, SYNC_WORDS, dirtyWords } from '../../src/io/translator.js';
import { GrantPool, readClaimsFiles, type AskAnswer } from '../../src/agent/grant-pool.js';
import { MappingTable, STATE_NO_WRITE, STATE_ZERO } from '../../src/table/mapping-table.js';
import type { Claim, CowClaims } from '../../src/protocol/agent-ops.js';

const SEG = 1 << 20;
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vdisk-ring-'));
t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));

/** A pool whose asker answers every request with `grants` new segments, recording the claims it was sent. */
function pool(file: string, perAnswer: number) {
  const sent: Claim[][] = [];
  let next = 0;
  const ask = async (want: number, claims: Claim[], accept: (a: AskAnswer) => void) => {
    sent.push(claims);
    const n = Math.min(want, perAnswer);
    accept({ grants: Array.from({ length: n }, () => ({ container: 3, offset: (next++ + 16) * SEG })) });
  };
  return { p: new GrantPool(file, SEG, ask, () => {}), sent };
}
const until = async (what: () => boolean) => {
  for (let i = 0; i < 4000 && !what(); i++) await new Promise((r) => setTimeout(r, 5));
};
function zeroTable(segments: number): MappingTable {
  const table = MappingTable.create({ segments, segmentSize: SEG });
  table.setRange(0, segments, { states: STATE_ZERO, container: 0, offset: 0, alt: 0 }, false);
  return table;
}

t.test('a claim is recorded, then installed; faults out and non-Zero entries stop it', async (t) => {
  const file = path.join(dir, '1.claims');
  const { p, sent } = pool(file, 8);
  p.prime();
  await until(() => p.held > 0);
  // (Answers of 8 until the ring is above half its target: how many have come in by now varies.)
  t.ok(p.held >= 8 && p.held % 8 === 0, `the ring holds the grants (${p.held})`);
  const table = zeroTable(16);
  const sync = new Int32Array(new SharedArrayBuffer(SYNC_WORDS * 4));
  const dirty = new Int32Array(new SharedArrayBuffer(dirtyWords(64) * 4));
  const ring = new ClaimRing(p.ring.buffer); // as a worker sees it
  t.ok(ring.claim(5, table, sync, dirty), 'an exact Zero entry is claimed');
  t.same(table.get(5), { states: 0, container: 3, offset: 16 * SEG, alt: 0 }, 'and maps the oldest grant');
  t.equal(Atomics.load(sync, SYNC_MAPPED), 1, 'SYNC_MAPPED bumped: a FLUSH waits for the claim to be sent');
  t.equal(Atomics.load(dirty, 0) & (1 << 3), 1 << 3, 'the container is dirty for the next FLUSH');
  t.same(readClaimsFiles(dir).get(1), [{ segment: 5, container: 3, offset: 16 * SEG }], 'the record is in the file');
  t.notOk(ring.claim(5, table, sync, dirty), 'a mapped entry is not claimed again');
  table.changeStates(6, 1, STATE_NO_WRITE, true);
  t.notOk(ring.claim(6, table, sync, dirty), 'nor one that is Zero and No-write');
  const token = p.ring.faultOut(7);
  t.notOk(ring.claim(7, table, sync, dirty), 'a segment is not claimed while a fault of it is out');
  t.ok(ring.claim(9, table, sync, dirty), 'another segment is, meanwhile');
  p.ring.faultIn(token);
  t.ok(ring.claim(7, table, sync, dirty), 'and that one too once its fault is answered');
  // More faults out than the ring has slots for: then nothing is claimed until they are answered.
  const tokens = Array.from({ length: 33 }, (_, k) => p.ring.faultOut(100 + k));
  t.equal(tokens.filter((x) => x < 0).length, 1, 'the 33rd fault finds no slot');
  t.notOk(ring.claim(10, table, sync, dirty), 'and stops every claim');
  for (const x of tokens) p.ring.faultIn(x);
  // The worker's message: the claims go to the controller without anyone asking the pool for them.
  const before = sent.length;
  p.claimed();
  await until(() => sent.slice(before).some((c) => c.length > 0));
  t.same(sent.slice(before).flat(), [5, 9, 7].map((segment, k) => ({ segment, container: 3, offset: (16 + k) * SEG })),
    'the pool collects the workers\' claims from the file, in order, and sends them');
  t.same(p.unconfirmed().claims, [], 'confirmed by the answer');
  p.drop();
  t.notOk(ring.claim(8, table, sync, dirty), 'a revocation empties the ring');
  p.close();
  t.notOk(fs.existsSync(file), 'closed: the file is gone');
});

t.test('a copy-on-write claim: only where the grants allow it, the data written before the record and the entry', async (t) => {
  const file = path.join(dir, '3.claims');
  let cow: CowClaims | undefined;
  let next = 0;
  const sent: Claim[][] = [];
  const ask = async (want: number, claims: Claim[], accept: (a: AskAnswer) => void) => {
    sent.push(claims);
    accept({ grants: Array.from({ length: Math.min(want, 8) }, () => ({ container: 2, offset: (next++ + 32) * SEG })), ...(cow ? { cow } : {}) });
  };
  const p = new GrantPool(file, SEG, ask, () => {});
  p.prime();
  await until(() => p.held > 0);
  const table = MappingTable.create({ segments: 16, segmentSize: SEG });
  table.setRange(0, 16, { states: STATE_NO_WRITE, container: 1, offset: 0, alt: 0 }, false);
  const sync = new Int32Array(new SharedArrayBuffer(SYNC_WORDS * 4));
  const dirty = new Int32Array(new SharedArrayBuffer(dirtyWords(64) * 4));
  const ring = new ClaimRing(p.ring.buffer);
  // (Not readClaimsFiles: it removes a file it finds empty, as a restarted agent does.)
  const recorded = () => {
    const b = fs.existsSync(file) ? fs.readFileSync(file) : Buffer.alloc(0);
    return Array.from({ length: b.length / CLAIM_RECORD_BYTES }, (_, k) => decodeClaim(b, k * CLAIM_RECORD_BYTES));
  };
  const writes: Array<{ container: number; offset: number; records: number; entry: number }> = [];
  const write = (container: number, offset: number) => {
    writes.push({ container, offset, records: recorded().length, entry: table.load(4) });
    return true;
  };
  t.notOk(ring.claimCow(4, true, table, sync, dirty, write), 'grants given without the copy-on-write rule serve no such claim');
  t.equal(writes.length, 0, 'and write nothing');
  // A revocation, then grants with the rule.
  p.drop();
  cow = 'whole';
  p.claimed();
  await until(() => p.held > 0 && ring.cow !== 0);
  t.equal(ring.cow, COW_WHOLE, 'the answer\'s rule reaches the ring');
  const first = p.held;
  t.notOk(ring.claimCow(4, false, table, sync, dirty, write), 'a write of part of the segment needs the copy rule');
  t.ok(ring.claimCow(4, true, table, sync, dirty, write), 'a whole write at an exact No-write entry is claimed');
  t.equal(writes.length, 1, 'its data is written once');
  t.same({ records: writes[0].records, entry: writes[0].entry }, { records: 0, entry: STATE_NO_WRITE },
    'before its record is in the file and before the entry changes (readers still read the shared segment)');
  const g = { container: writes[0].container, offset: writes[0].offset };
  t.same(table.get(4), { states: 0, ...g, alt: 0 }, 'then the entry maps the grant, writable');
  t.same(recorded(), [{ segment: 4, ...g, cow: true }], 'the record says copy-on-write');
  t.equal(Atomics.load(sync, SYNC_MAPPED), 1, 'SYNC_MAPPED bumped');
  t.equal(Atomics.load(dirty, 0) & (1 << 2), 1 << 2, 'the grant\'s container is dirty for the next FLUSH');
  t.equal(p.held, first - 1, 'one grant taken');
  t.notOk(ring.claimCow(4, true, table, sync, dirty, write), 'the entry, now writable, is not claimed again');
  table.changeStates(5, 1, STATE_ZERO, true);
  t.notOk(ring.claimCow(5, true, table, sync, dirty, write), 'nor one with another state besides No-write');
  t.notOk(ring.claim(6, table, sync, dirty), 'a No-write entry is no Zero claim');
  const out = p.ring.faultOut(6);
  t.notOk(ring.claimCow(6, true, table, sync, dirty, write), 'nothing while a fault of the segment is out');
  p.ring.faultIn(out);
  // A write that fails: its grant may hold some of the data, so it is dropped, never claimed as zeros later.
  const held = p.held;
  t.notOk(ring.claimCow(6, true, table, sync, dirty, () => false), 'a failed write claims nothing');
  t.equal(table.load(6), STATE_NO_WRITE, 'the entry is unchanged (the write faults as before)');
  t.equal(p.held, held - 1, 'and the grant it touched is gone from the ring');
  t.equal(recorded().length, 1, 'no record for it');
  const before = sent.length;
  p.claimed();
  await until(() => sent.slice(before).some((c) => c.length > 0));
  t.same(sent.slice(before).flat(), [{ segment: 4, ...g, cow: true }], 'the claim goes to the controller marked copy-on-write');
  // With `--partial copy`, a write of part of a segment is claimed too: `write` gets the old segment to copy from.
  p.drop();
  cow = 'copy';
  p.claimed();
  await until(() => p.held > 0 && ring.cow !== 0);
  t.equal(ring.cow, COW_COPY);
  let from: unknown;
  t.ok(ring.claimCow(7, false, table, sync, dirty, (_c, _o, f) => { from = { ...f }; return true; }), 'a partial write is claimed under the copy rule');
  t.same(from, { states: STATE_NO_WRITE, container: 1, offset: 0, alt: 0 }, 'its writer is told the old segment');
  p.drop();
  t.equal(ring.cow, 0, 'a revocation clears the rule with the grants');
  p.close();
});

t.test('worker threads claiming while the main thread confirms: every claim once, none lost', async (t) => {
  const file = path.join(dir, '2.claims');
  const SEGMENTS = 3000;
  const { p, sent } = pool(file, 64);
  p.prime();
  await until(() => p.held > 0);
  const table = zeroTable(SEGMENTS);
  const sync = new SharedArrayBuffer(SYNC_WORDS * 4);
  const dirty = new SharedArrayBuffer(dirtyWords(64) * 4);
  // Two workers claim the segments of their parity, retrying while the ring is empty; the main thread tops the
  // ring up and confirms (rewriting or truncating the file) as claims arrive.
  const src = `
    const { workerData, parentPort } = require('node:worker_threads');
    const { ClaimRing } = require(${JSON.stringify(path.resolve('dist-test/src/io/claim-ring.js'))});
    const { MappingTable } = require(${JSON.stringify(path.resolve('dist-test/src/table/mapping-table.js'))});
    const ring = new ClaimRing(workerData.ring);
    const table = new MappingTable(workerData.table, { segments: workerData.segments, segmentSize: workerData.seg });
    const sync = new Int32Array(workerData.sync), dirty = new Int32Array(workerData.dirty);
    for (let s = workerData.first; s < workerData.segments; s += 2) {
      while (!ring.claim(s, table, sync, dirty)) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 1);
      if (s % 16 < 2) parentPort.postMessage('claimed');
    }
    parentPort.postMessage('done');
  `;
  const workers = [0, 1].map((first) => new Worker(src, {
    eval: true, workerData: { ring: p.ring.buffer, table: table.buffer, segments: SEGMENTS, seg: SEG, sync, dirty, first },
  }));
  let done = 0;
  for (const w of workers) {
    w.on('message', (m) => { if (m === 'done') done++; else p.claimed(); });
    w.on('error', (err) => { t.fail(`worker: ${err.message}`); done++; });
  }
  const confirmed: Claim[] = [];
  while (done < 2 || p.unconfirmed().claims.length > 0) {
    const { claims, upTo } = p.unconfirmed();
    confirmed.push(...claims);
    p.confirm(upTo);
    p.claimed(); // tops the ring up
    await new Promise((r) => setImmediate(r));
  }
  await Promise.all(workers.map((w) => w.terminate()));
  // The pool's own grant requests carried (and confirmed) the rest; its asker answers at once, so no claim is
  // in both lists.
  confirmed.push(...sent.flat());
  const bySegment = new Map(confirmed.map((c) => [c.segment, c]));
  t.equal(confirmed.length, SEGMENTS, 'as many claims as segments');
  t.equal(bySegment.size, SEGMENTS, 'each segment claimed once');
  t.equal(new Set(confirmed.map((c) => c.offset)).size, SEGMENTS, 'each grant used once');
  let mismatched = 0;
  for (let s = 0; s < SEGMENTS; s++) {
    const e = table.get(s);
    if (e.states !== 0 || e.offset !== bySegment.get(s)?.offset) mismatched++;
  }
  t.equal(mismatched, 0, 'every entry maps the grant its claim names');
  t.ok(sent.length > 1, `the claims went on in ${sent.length} requests`);
  t.equal(fs.statSync(file).size, 0, 'all confirmed: the file is empty');
  p.close();
});
