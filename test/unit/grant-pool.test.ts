// The agent's grant pool (src/agent/grant-pool.ts) with a scripted asker: a claim is in the claims file
// before take() returns, confirmed claims leave it (an empty file is truncated), the file a killed agent
// left is read back whole (a torn last record ignored), the pool grows when writers outrun it, and a lease
// expiry voids the answers still on their way.
import t from 'tap';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { CLAIM_RECORD_BYTES, GrantPool, readClaimsFiles, type AskAnswer } from '../../src/agent/grant-pool.js';
import type { Claim } from '../../src/protocol/agent-ops.js';

const SEG = 1 << 20;
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vdisk-pool-'));
t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));

/** An asker whose answers the test gives: each call waits for answer(). */
function scripted() {
  const calls: Array<{ want: number; claims: Claim[]; answer: (a: AskAnswer) => void }> = [];
  const ask = (want: number, claims: Claim[]) => new Promise<AskAnswer>((resolve) => calls.push({ want, claims, answer: resolve }));
  return { calls, ask };
}
const turn = () => new Promise((r) => setImmediate(r));
const seg = (i: number) => ({ container: 2, offset: (i + 8) * SEG });

t.test('claims go to the file before take() returns; confirmed ones leave it', async (t) => {
  const file = path.join(dir, '5.claims');
  const s = scripted();
  const pool = new GrantPool(file, SEG, s.ask, () => {});
  t.equal(pool.take(0), undefined, 'nothing held: the write faults');
  t.equal(s.calls.length, 1, 'and a refill is asked');
  t.equal(s.calls[0].want, 16, 'for the first 16 MiB');
  s.calls[0].answer({ grants: Array.from({ length: 16 }, (_, i) => seg(i)) });
  await turn();
  t.equal(pool.held, 16);
  t.same(pool.take(3), seg(0));
  t.same(pool.take(2 ** 31 + 5), seg(1), 'segment numbers past 2^31 are kept whole');
  t.equal(fs.statSync(file).size, 2 * CLAIM_RECORD_BYTES, 'two records, written by take()');
  t.same(readClaimsFiles(dir).get(5), [{ segment: 3, ...seg(0) }, { segment: 2 ** 31 + 5, ...seg(1) }], 'read back as they were claimed');
  const { claims, upTo } = pool.unconfirmed();
  t.equal(claims.length, 2);
  pool.take(4);
  pool.confirm(upTo);
  t.same(pool.unconfirmed().claims, [{ segment: 4, ...seg(2) }], 'a claim made after the send stays');
  t.equal(fs.statSync(file).size, 3 * CLAIM_RECORD_BYTES, 'the file keeps everything while one is unconfirmed');
  pool.confirm(pool.unconfirmed().upTo);
  t.equal(fs.statSync(file).size, 0, 'all confirmed: the file is truncated');
  pool.take(6);
  t.equal(fs.statSync(file).size, CLAIM_RECORD_BYTES, 'and appended to again from its start');
  pool.close();
  t.ok(fs.existsSync(file), 'closed with an unconfirmed claim: the file stays for the next agent');
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

t.test('the pool doubles when a write finds it empty while a refill is out, and refills at half', async (t) => {
  const s = scripted();
  const pool = new GrantPool(path.join(dir, '6.claims'), SEG, s.ask, () => {});
  pool.take(0);
  s.calls[0].answer({ grants: Array.from({ length: 16 }, (_, i) => seg(i)) });
  await turn();
  for (let i = 0; i < 7; i++) pool.take(i);
  t.equal(s.calls.length, 1, 'nine held: no refill yet');
  pool.take(7);
  t.equal(s.calls.length, 2, 'eight held: a refill');
  t.equal(s.calls[1].want, 8);
  t.equal(s.calls[1].claims.length, 8, 'carrying the claims so far');
  for (let i = 8; i < 16; i++) pool.take(i);
  t.equal(pool.take(16), undefined, 'empty while the refill is out');
  s.calls[1].answer({ grants: [seg(20)] });
  await turn();
  t.same(pool.unconfirmed().claims.map((c) => c.segment), [8, 9, 10, 11, 12, 13, 14, 15], 'the answered request confirmed what it carried');
  pool.take(17);
  t.equal(s.calls[2].want, 32, 'the next request asks for the doubled pool');
  pool.close();
});

t.test('an expired lease voids grants on their way; a revocation keeps the claims', async (t) => {
  const s = scripted();
  const pool = new GrantPool(path.join(dir, '8.claims'), SEG, s.ask, () => {});
  pool.take(0);
  pool.drop(true);
  s.calls[0].answer({ grants: [seg(0), seg(1)] });
  await turn();
  t.equal(pool.held, 0, 'the answer of a request sent before the lease expired is ignored');
  pool.take(1);
  s.calls[1].answer({ grants: [seg(2), seg(3)] });
  await turn();
  pool.take(5);
  pool.drop();
  t.equal(pool.held, 0, 'revoked: nothing held');
  t.same(pool.unconfirmed().claims, [{ segment: 5, ...seg(2) }], 'the claim stays until confirmed');
  pool.confirm(pool.unconfirmed().upTo);
  pool.close();
  t.notOk(fs.existsSync(path.join(dir, '8.claims')), 'closed with nothing unconfirmed: the file is removed');
});
