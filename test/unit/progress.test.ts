// Progress of long commands against a real in-process controller: `vdisk check` and `vdisk rm` draw a
// progress line on stderr when it is a terminal (counts rising to the table's size, erased before the result,
// no escape codes) and print nothing extra when it is not; the controller sends events only when asked;
// `vdisk fold` counts alternates.
import t from 'tap';
import path from 'node:path';
import { FAULT_WRITE } from '../../src/protocol/fault-ops.js';
import { PROGRESS_EVENT, type ProgressEvent } from '../../src/protocol/progress.js';
import { STATE_NO_WRITE } from '../../src/table/mapping-table.js';
import { runCli } from '../support/cli.js';
import { scriptedController } from '../support/scripted-agent.js';

const MB = 1 << 20;
const SEGMENTS = 4096; // 64 KiB segments: four stored chunks of a thick table

/** The states of the line as drawn: each \r starts a new one. */
const frames = (err: string) => err.split('\r').filter((f) => f.length > 0);
const counts = (err: string) => frames(err).map((f) => /(\d+)\/(\d+) segments/.exec(f)).filter((m) => m !== null)
  .map((m) => [Number(m[1]), Number(m[2])]);

t.test('check and rm: a progress line on a terminal, nothing extra otherwise', async (t) => {
  const { dir, ask, cli } = await scriptedController(t, 'vdisk-progress-');
  await ask('container.add', { name: 'c1', path: path.join(dir, 'c1.img'), size: 512 * MB });
  await ask('disk.create', { name: 'big', size: SEGMENTS * 64 * 1024, segmentSize: 64 * 1024, thick: true });

  const events: ProgressEvent[] = [];
  cli.onEvent((name, data) => { if (name === PROGRESS_EVENT) events.push(data as ProgressEvent); });
  await ask('check', {});
  t.same(events, [], 'no progress events unless the request asks for them');

  const piped = await runCli(['check'], dir);
  t.equal(piped.status, 0, piped.err);
  t.equal(piped.err, '', 'off a terminal: nothing on stderr');
  t.match(piped.out, /^1 disk\(s\), 4096 allocated segment\(s\), 4096 reference\(s\): consistent\n$/, 'and the result alone on stdout');

  const check = await runCli(['check'], dir, { ttyStderr: true });
  t.equal(check.status, 0);
  const seen = counts(check.err);
  t.ok(seen.length >= 2, `the line was drawn ${seen.length} times`);
  t.ok(seen.every(([, total]) => total === SEGMENTS), 'out of the pool\'s table entries');
  t.same(seen.at(-1), [SEGMENTS, SEGMENTS], 'ending at the whole pool');
  t.ok(seen.every(([done], i) => i === 0 || done >= seen[i - 1][0]), 'never going back');
  t.match(frames(check.err)[0], /^checking \[/, 'labelled');
  t.match(check.err, /\r +\r$/, 'erased before the result is printed');
  t.notOk(check.err.includes('\x1b'), 'no escape codes');
  t.match(check.out, /consistent/, 'the result on stdout');

  const rm = await runCli(['rm', 'big'], dir, { ttyStderr: true });
  t.equal(rm.status, 0, rm.err);
  t.match(frames(rm.err)[0], /^removing big \[/);
  t.same(counts(rm.err).at(-1), [SEGMENTS, SEGMENTS], 'rm reports its way through the whole table');
  t.equal(rm.out, 'disk big removed\n');
  const after = await runCli(['check', '--json'], dir);
  t.match(JSON.parse(after.out), { ok: true, disks: 0, allocations: 0 }, 'and every segment was freed');
});

t.test('fold: a progress line through the disk\'s alternates', async (t) => {
  const { dir, ask, scriptedAgent } = await scriptedController(t, 'vdisk-progress-fold-');
  await ask('container.add', { name: 'c1', path: path.join(dir, 'c1.img'), size: 64 * MB });
  const d = await ask<{ id: number }>('disk.create', { name: 'p', size: 8 * 64 * 1024, segmentSize: 64 * 1024, thick: true });
  await ask('disk.snapshot', { name: 'p', snapshot: 'p-snap' });
  // A scripted agent writes 4 KiB into each shared segment: each gets an alternate (--partial bitmap).
  const hx = await scriptedAgent('hx', 3);
  for (let s = 0; s < 8; s++) {
    await hx.conn.request('fault', { diskId: d.id, op: FAULT_WRITE, segment: s, states: STATE_NO_WRITE, offset: 4096, length: 4096 });
  }
  const fold = await runCli(['fold', 'p'], dir, { ttyStderr: true });
  t.equal(fold.status, 0, fold.err);
  const seen = frames(fold.err).map((f) => /(\d+)\/(\d+) alternates/.exec(f)).filter((m) => m !== null).map((m) => [Number(m[1]), Number(m[2])]);
  t.ok(seen.length >= 1, `the line was drawn ${seen.length} times`);
  t.same(seen.at(-1), [8, 8], 'ending at all eight alternates');
  t.match(frames(fold.err)[0], /^folding p \[/);
  t.equal(fold.out, 'disk p: 8 segment(s) folded\n', 'the result alone on stdout');
  t.match(JSON.parse((await runCli(['check', '--json'], dir)).out), { ok: true });
});
