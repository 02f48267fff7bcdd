// The agent's grant pool (src/agent/grant-pool.ts) with a scripted asker: a claim is in the claims file
// before take() returns, confirmed claims leave it (an empty file is truncated), the file a killed agent
// left is read back whole (a torn last record ignored), the pool grows when writers outrun it, and a lease
// expiry voids the answers still on their way.
import t from 'tap';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { CLAIM_RECORD_BYTES, GRANT_FIRST_BYTES, GrantPool, claimsDir, readClaimsFiles, type AskAnswer } from '../../src/agent/grant-pool.js';
import type { Claim } from '../../src/protocol/agent-ops.js';

const SEG = 1 << 20;
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vdisk-pool-'));
t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));

/** An asker whose answers the test gives: each call waits for answer(). */
function scripted() {
  const calls: Array<{ want: number; claims: Claim[]; answer: (a: AskAnswer) => void }> = [];
  const ask = (want: number, claims: Claim[], accept: (a: AskAnswer) => void) =>
    new Promise<void>((resolve) => calls.push({ want, claims, answer: (a) => { accept(a); resolve(); } }));
  return { calls, ask };
}
/** Two turns: an answer's handler runs, then the request it schedules goes out. */
const turn = () => new Promise((r) => setImmediate(r)).then(() => new Promise((r) => setImmediate(r)));
/** Until a request count is reached (claims alone wait CLAIMS_DELAY_MS for company). */
async function calls(s: { calls: unknown[] }, n: number): Promise<void> {
  for (let i = 0; i < 200 && s.calls.length < n; i++) await new Promise((r) => setTimeout(r, 5));
}
const seg = (i: number) => ({ container: 2, offset: (i + 8) * SEG });
/** The first request's size: the first pool, doubled because the write that asked found it empty. */
const N = (2 * GRANT_FIRST_BYTES) / SEG;

t.test('claims go to the file before take() returns; confirmed ones leave it', async (t) => {
  const file = path.join(dir, '5.claims');
  const s = scripted();
  const pool = new GrantPool(file, SEG, s.ask, () => {});
  t.equal(pool.take(0), undefined, 'nothing held: the write faults');
  await turn();
  t.equal(s.calls.length, 1, 'and grants are asked at once');
  t.same([s.calls[0].want, s.calls[0].claims], [N, []], 'for twice the first pool: a write found it empty');
  s.calls[0].answer({ grants: Array.from({ length: N }, (_, i) => seg(i)) });
  await turn();
  t.equal(pool.held, N);
  t.same(pool.take(3), seg(0));
  t.same(pool.take(2 ** 31 + 5), seg(1), 'segment numbers past 2^31 are kept whole');
  t.equal(fs.statSync(file).size, 2 * CLAIM_RECORD_BYTES, 'two records, written by take()');
  t.same(readClaimsFiles(dir).get(5), [{ segment: 3, ...seg(0) }, { segment: 2 ** 31 + 5, ...seg(1) }], 'read back as they were claimed');
  await calls(s, 2);
  t.equal(s.calls.length, 2, 'claims made together go in one request');
  t.same([s.calls[1].want, s.calls[1].claims.length], [2, 2], 'claims alone (the pool above half) still top it up to its target');
  pool.take(4);
  await turn();
  t.equal(s.calls.length, 2, 'one request at a time');
  s.calls[1].answer({ grants: [] });
  await turn();
  t.same(pool.unconfirmed().claims, [{ segment: 4, ...seg(2) }], 'a claim made after the send stays');
  t.same(readClaimsFiles(dir).get(5), [{ segment: 4, ...seg(2) }], 'and is all the file holds: confirmed claims leave it');
  await calls(s, 3);
  t.equal(s.calls.length, 3, 'it goes in the next request, once the last one was answered');
  pool.take(9);
  t.equal(fs.statSync(file).size, 2 * CLAIM_RECORD_BYTES, 'the rewritten file is appended to');
  s.calls[2].answer({ grants: [] });
  await calls(s, 4);
  s.calls[3].answer({ grants: [] });
  await turn();
  t.equal(fs.statSync(file).size, 0, 'all confirmed: the file is truncated');
  pool.take(6);
  t.equal(fs.statSync(file).size, CLAIM_RECORD_BYTES, 'and appended to again from its start');
  pool.close();
  t.notOk(fs.existsSync(file), 'closed (its claims handed over): the file is gone');
});

t.test('a torn last record is ignored; a file of nothing is removed', async (t) => {
  const d = fs.mkdtempSync(path.join(dir, 'torn-'));
  const good = Buffer.alloc(CLAIM_RECORD_BYTES);
  good.writeUInt32LE(0x4d494c43, 0);
  good.writeUInt32LE(7, 4);
  good.writeUInt32LE(1, 8);
  good.writeDoubleLE(2 ** 40, 16);
  fs.writeFileSync(path.join(d, '9.claims'), Buffer.concat([good, good.subarray(0, 10)]));
  fs.writeFileSync(path.join(d, '3.claims'), Buffer.alloc(0));
  fs.writeFileSync(path.join(d, 'other'), 'x');
  const got = readClaimsFiles(d);
  t.same([...got], [[9, [{ segment: 7, container: 1, offset: 2 ** 40 }]]]);
  t.notOk(fs.existsSync(path.join(d, '3.claims')), 'the empty file is gone');
  t.same(readClaimsFiles(path.join(d, 'missing')).size, 0, 'no directory: no claims');
});

t.test('the pool is topped up at half, and doubles when a write finds it empty', async (t) => {
  const s = scripted();
  const pool = new GrantPool(path.join(dir, '6.claims'), SEG, s.ask, () => {});
  pool.take(0);
  await turn();
  s.calls[0].answer({ grants: Array.from({ length: N }, (_, i) => seg(i)) });
  await turn();
  for (let i = 0; i < N / 2; i++) pool.take(i);
  await turn();
  t.equal(s.calls.length, 2);
  t.same([s.calls[1].want, s.calls[1].claims.length], [N / 2, N / 2], 'half held: a top-up at once, with the claims so far');
  for (let i = N / 2; i < N; i++) pool.take(i);
  t.equal(pool.take(N), undefined, 'empty while the top-up is out');
  s.calls[1].answer({ grants: [seg(N + 5)] });
  await turn();
  t.same(pool.unconfirmed().claims.map((c) => c.segment), Array.from({ length: N / 2 }, (_, i) => N / 2 + i), 'the answered request confirmed what it carried');
  t.same([s.calls[2].want, s.calls[2].claims.length], [2 * N - 1, N / 2], 'the next request tops up the doubled pool');
  pool.close();
});

t.test('an expired lease voids grants on their way; a revocation keeps the claims; a failed request is resent', async (t) => {
  const s = scripted();
  const pool = new GrantPool(path.join(dir, '8.claims'), SEG, s.ask, () => {});
  pool.take(0);
  await turn();
  pool.drop(true);
  s.calls[0].answer({ grants: [seg(0), seg(1)] });
  await turn();
  t.equal(pool.held, 0, 'the answer of a request sent before the lease expired is ignored');
  pool.take(1);
  await turn();
  s.calls[1].answer({ grants: [seg(2), seg(3), seg(4)] });
  await turn();
  pool.take(5);
  pool.drop();
  t.equal(pool.held, 0, 'revoked: nothing held');
  t.same(pool.unconfirmed().claims, [{ segment: 5, ...seg(2) }], 'the claim stays until confirmed');
  await calls(s, 3);
  t.equal(s.calls.length, 3, 'and is sent');
  const failing = new GrantPool(path.join(dir, '10.claims'), SEG, () => Promise.reject(new Error('no link')), () => {});
  failing.take(0);
  await turn();
  await turn();
  t.equal(failing.stats.requests, 1, 'a failed request is not retried in a loop');
  failing.close();
  pool.close();
});

t.test('claims files are per host and per controller: two clusters\' agents named h1 do not share them', async (t) => {
  const a = claimsDir('h1', '/scratch/a/controller.sock');
  t.equal(claimsDir('h1', '/scratch/a/controller.sock'), a, 'the same for the next agent of that controller');
  t.not(claimsDir('h1', '/scratch/b/controller.sock'), a, 'another controller\'s h1 has its own');
  t.not(claimsDir('h2', '/scratch/a/controller.sock'), a, 'another host of the same controller too');
});

t.test('a device start can wait for the first answer, and only so long', async (t) => {
  const s = scripted();
  const pool = new GrantPool(path.join(dir, '9.claims'), SEG, s.ask, () => {});
  t.equal(await pool.answered(20), false, 'nothing asked yet: the wait runs out');
  pool.prime();
  await calls(s, 1);
  const waiting = pool.answered(60_000);
  let done = false;
  void waiting.then(() => { done = true; });
  await turn();
  t.equal(done, false, 'the first request is out: still waiting');
  s.calls[0].answer({ grants: [seg(0), seg(1)] });
  t.equal(await waiting, true, 'answered: the wait ends with it');
  t.equal(pool.held, 2, 'the grants are held by then');
  t.equal(await pool.answered(0), true, 'and later waits end at once');
  pool.close();
});
