// Claims end to end, with a real in-process controller and a real agent (no ublk: the device's fault callback
// is called directly): a writable disk's pool is granted segments when its table is made, a first write into
// a Zero entry takes one without asking (its claim in the claims file first) and the store maps it soon
// after, and a revocation in the frame right after a grant answer finds those grants in the pool (the answer
// is applied as its frame is decoded), so nothing the controller then frees is ever used.
import t from 'tap';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { AgentDisk } from '../../src/agent/agent-disk.js';
import { readClaimsFiles } from '../../src/agent/grant-pool.js';
import type { Disk } from '../../src/controller/store.js';
import { agentRequest } from '../../src/protocol/agent-ops.js';
import { controllerWithAgent } from '../support/real-agent.js';
import { FAULT_WRITE } from '../../src/protocol/fault-ops.js';
import { ENTRY_BYTES, encodeEntry } from '../../src/table/entry-codec.js';
import { STATE_ZERO } from '../../src/table/mapping-table.js';

const SEG = 64 * 1024;
const SEGMENTS = 64;
const env = await controllerWithAgent(t, 'vdisk-agrants-', { log: () => {}, claimsDir: path.join(os.tmpdir(), `vdisk-agrants-claims-${process.pid}`) });
const { dir, controller, cli, agent } = env;
const claims = path.join(os.tmpdir(), `vdisk-agrants-claims-${process.pid}`);
t.teardown(() => fs.rmSync(claims, { recursive: true, force: true }));

async function until(what: string, cond: () => boolean | Promise<boolean>): Promise<void> {
  for (let i = 0; !(await cond()); i++) {
    if (i > 500) throw new Error(`timed out waiting until ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}
const ask = async <T>(op: string, args: Record<string, unknown> = {}): Promise<T> => (await cli.request(op, args)).result as T;
await until('the agent registers', () => controller.agents.get('h1') !== undefined);

await ask('container.add', { name: 'c1', path: path.join(dir, 'c1.img'), size: 32 << 20 });
const disk = await ask<Disk>('disk.create', { name: 'd1', size: SEGMENTS * SEG, segmentSize: SEG });
// What an attach does before its device starts: the record, the table, its entries (all Zero).
await controller.store.putAttachment(disk.id, 'h1', null);
const conn = () => controller.agents.get('h1')!.conn;
await agentRequest(conn(), 'table.create', { diskId: disk.id, name: 'd1', size: SEGMENTS * SEG, segmentSize: SEG, readOnly: false });
const zeros = Buffer.alloc(SEGMENTS * ENTRY_BYTES);
for (let k = 0; k < SEGMENTS; k++) encodeEntry(zeros, k, { states: STATE_ZERO, container: 0, offset: 0, alt: 0 });
await agentRequest(conn(), 'table.set', { diskId: disk.id, first: 0, blocking: false }, { payload: zeros });
const d = (): AgentDisk => agent.disks.get(disk.id)!;
const write = (segment: number) => d().fault({ op: FAULT_WRITE, segment, states: STATE_ZERO, offset: 0, length: 4096 });
const stored = async (segment: number) => (await controller.store.tables.getEntries(disk, segment, 1))[0];

t.test('a first write takes a granted segment without asking; the store maps it soon after', async (t) => {
  await until('the pool holds grants', () => (d().grants?.held ?? 0) > 0);
  const faultsBefore = controller.metrics.snapshot(controller.store, controller.agents).then((s) => s.faults.write?.count ?? 0);
  t.equal(await write(2), 0, 'the write goes on');
  const e = d().table.get(2);
  t.equal(e.states, 0, 'its entry is mapped in the agent at once');
  t.same(readClaimsFiles(claims).get(disk.id), [{ segment: 2, container: e.container, offset: e.offset }], 'its claim is in the claims file');
  await until('the store maps it', async () => (await stored(2)).states === 0);
  t.same(await stored(2), e, 'to the same segment');
  t.equal((await controller.metrics.snapshot(controller.store, controller.agents)).faults.write?.count ?? 0, await faultsBefore, 'no fault was sent');
  await until('the claim is confirmed', () => d().grants?.report().unconfirmed === 0);
  t.equal(fs.statSync(path.join(claims, `${disk.id}.claims`)).size, 0, 'and the file is empty again');
});

t.test('a fault the queue reported before the segment was claimed is not sent: the request is planned again', async (t) => {
  t.equal(await write(20), 0);
  const claimed = d().table.get(20);
  t.equal(claimed.states, 0, 'segment 20 claimed');
  const before = (await controller.metrics.snapshot(controller.store, controller.agents)).faults.write?.count ?? 0;
  // The other half of the same 1 MiB write, reported while the first half's claim was being made.
  t.equal(await write(20), 0, 'the stale report is answered at once');
  t.same(d().table.get(20), claimed, 'the claimed entry stands');
  t.equal((await controller.metrics.snapshot(controller.store, controller.agents)).faults.write?.count ?? 0, before, 'no fault reached the controller');
  await until('the store maps the claim', async () => (await stored(20)).states === 0);
  t.same(await stored(20), claimed, 'and the store maps the claimed segment, not another');
});

t.test('a revocation in the frame after a grant answer finds the answer\'s grants in the pool', async (t) => {
  // The next grant answer and a grants.revoke travel in one write, so the agent decodes both in one go.
  const grants = controller.attachments.grants;
  const real = grants.grant.bind(grants);
  let revoked: Promise<unknown> | undefined;
  grants.grant = async (disk, hostId, want, claims) => {
    // After the revocation nothing more is granted: a top-up the agent sends after it (its pool is empty)
    // would otherwise refill the pool before the check below.
    const answer = await real(disk, hostId, revoked ? 0 : want, claims);
    if (!revoked && answer.grants.length > 0) {
      const c = conn();
      c.socket.cork();
      setImmediate(() => {
        revoked = agentRequest(c, 'grants.revoke', { diskId: disk.id });
        c.socket.uncork();
      });
    }
    return answer;
  };
  t.teardown(() => { grants.grant = real; });
  // Claims until a top-up goes out and comes back.
  for (let s = 3; !revoked && s < SEGMENTS; s++) {
    await write(s);
    await new Promise((r) => setTimeout(r, 5));
  }
  await until('the revocation is sent', () => revoked !== undefined);
  await revoked;
  t.equal(d().grants?.held, 0, 'after the revocation the pool holds nothing: the answer before it was applied first');
});
