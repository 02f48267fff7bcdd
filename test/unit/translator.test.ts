// Translator: how ublk requests become plan records through the table (states, boundaries, merging).
import t from 'tap';
import * as abi from '../../src/native/abi.js';
import { DEFERRED, FAULTED, PLANNED, SYNC, SYNC_DURABLE, SYNC_MAPPED, SYNC_WORDS, Translator, genReached } from '../../src/io/translator.js';
import { FAULT_DISCARD, FAULT_READ, FAULT_RECLAIM, FAULT_WRITE } from '../../src/protocol/fault-ops.js';
import {
  MappingTable, STATE_ALTERNATE, STATE_ERROR, STATE_INVALID, STATE_NO_WRITE, STATE_ZERO,
} from '../../src/table/mapping-table.js';

const MB = 1 << 20;
const SEG = MB;

interface Rec { op: number; tag: number; fd: number; flags: number; bufOff: number; len: number; off: number }

function records(tr: Translator): Rec[] {
  const out: Rec[] = [];
  for (let i = 0; i < tr.n; i++) {
    const r = i * abi.PLAN_STRIDE;
    const p = tr.plan;
    out.push({
      op: p[r + abi.PLAN_OP], tag: p[r + abi.PLAN_TAG], fd: p[r + abi.PLAN_FD], flags: p[r + abi.PLAN_FLAGS],
      bufOff: p[r + abi.PLAN_BUF_OFF], len: p[r + abi.PLAN_LEN],
      off: (p[r + abi.PLAN_OFF_LO] >>> 0) + (p[r + abi.PLAN_OFF_HI] >>> 0) * 2 ** 32,
    });
  }
  return out;
}

const commit = (tag: number, result: number): Rec => ({ op: abi.OP_COMMIT, tag, fd: result, flags: 0, bufOff: 0, len: 0, off: 0 });

/** 16 segments; containers 0 -> fd 10, 1 -> fd 11. Segments map in order to container 0 unless changed. */
function setup(segments = 16): { table: MappingTable; tr: Translator } {
  const table = MappingTable.create({ segments, segmentSize: SEG });
  table.setRange(0, segments, { states: 0, container: 0, offset: 0, alt: 0 });
  const fds = Int32Array.from([10, 11, -1]);
  const tr = new Translator(table, fds, new Int32Array(1), (segments * SEG) / 512, 64 * abi.MAX_OPS_PER_TAG);
  return { table, tr };
}

const sectors = (bytes: number) => bytes / 512;

t.test('a read inside one segment is one pread', async (t) => {
  const { tr } = setup();
  t.equal(tr.translate(3, abi.UBLK_IO_OP_READ, 8, sectors(2 * SEG + 4096)), PLANNED);
  t.same(records(tr), [
    { op: abi.OP_READ, tag: 3, fd: 10, flags: 0, bufOff: 0, len: 4096, off: 2 * SEG + 4096 },
    commit(3, 4096),
  ]);
});

t.test('contiguous segments merge into one operation', async (t) => {
  const { tr } = setup();
  t.equal(tr.translate(1, abi.UBLK_IO_OP_WRITE, sectors(2 * SEG), sectors(SEG / 2)), PLANNED);
  t.same(records(tr), [
    { op: abi.OP_WRITE, tag: 1, fd: 10, flags: 0, bufOff: 0, len: 2 * SEG, off: SEG / 2 },
    commit(1, 2 * SEG),
  ]);
});

t.test('an I/O crossing into a segment elsewhere splits at the boundary', async (t) => {
  const { table, tr } = setup();
  table.setRange(5, 1, { states: 0, container: 1, offset: 40 * SEG, alt: 0 });
  // 8 KiB starting 4 KiB before the end of segment 4
  t.equal(tr.translate(7, abi.UBLK_IO_OP_READ, 16, sectors(5 * SEG - 4096)), PLANNED);
  t.same(records(tr), [
    { op: abi.OP_READ, tag: 7, fd: 10, flags: 0, bufOff: 0, len: 4096, off: 5 * SEG - 4096 },
    { op: abi.OP_READ, tag: 7, fd: 11, flags: 0, bufOff: 4096, len: 4096, off: 40 * SEG },
    commit(7, 8192),
  ]);
});

t.test('reads of Zero segments fill zeros without I/O; writes to them fault', async (t) => {
  const { table, tr } = setup();
  table.setRange(2, 1, { states: STATE_ZERO, container: 0, offset: 0, alt: 0 });
  t.equal(tr.translate(0, abi.UBLK_IO_OP_READ, sectors(2 * SEG), sectors(SEG)), PLANNED);
  t.same(records(tr), [
    { op: abi.OP_READ, tag: 0, fd: 10, flags: 0, bufOff: 0, len: SEG, off: SEG },
    { op: abi.OP_ZERO, tag: 0, fd: 0, flags: 0, bufOff: SEG, len: SEG, off: SEG },
    commit(0, 2 * SEG),
  ]);
  tr.n = 0;
  t.equal(tr.translate(1, abi.UBLK_IO_OP_WRITE, 8, sectors(2 * SEG + 8192)), FAULTED);
  t.equal(tr.n, 0, 'a fault leaves no records');
  t.equal(tr.faultOp, FAULT_WRITE);
  t.equal(tr.faultSegment, 2);
  t.equal(tr.faultStates, STATE_ZERO);
});

t.test('Invalid faults reads and writes; No-write faults only writes', async (t) => {
  const { table, tr } = setup();
  table.setRange(4, 1, { states: STATE_INVALID, container: 0, offset: 0, alt: 0 });
  table.setRange(6, 1, { states: STATE_NO_WRITE, container: 0, offset: 6 * SEG, alt: 0 });
  t.equal(tr.translate(0, abi.UBLK_IO_OP_READ, 8, sectors(4 * SEG)), FAULTED);
  t.equal(tr.faultOp, FAULT_READ);
  t.equal(tr.faultSegment, 4);
  t.equal(tr.translate(0, abi.UBLK_IO_OP_READ, 8, sectors(6 * SEG)), PLANNED);
  tr.n = 0;
  // A write that starts in a writable segment and runs into the No-write one faults as a whole.
  t.equal(tr.translate(0, abi.UBLK_IO_OP_WRITE, sectors(8192), sectors(6 * SEG - 4096)), FAULTED);
  t.equal(tr.faultSegment, 6);
  t.equal(tr.n, 0);
  t.equal(tr.translate(0, abi.UBLK_IO_OP_DISCARD, sectors(SEG), sectors(6 * SEG)), FAULTED);
  t.equal(tr.faultOp, FAULT_DISCARD);
  table.setRange(7, 1, { states: STATE_ALTERNATE, container: 0, offset: 7 * SEG, alt: 1 });
  t.equal(tr.translate(0, abi.UBLK_IO_OP_READ, 8, sectors(7 * SEG)), PLANNED, 'an Alternate entry reads unmarked blocks from its own location');
  t.equal(records(tr)[0].off, 7 * SEG);
});

t.test('Error segments fail the request with EIO and drop its other records', async (t) => {
  const { table, tr } = setup();
  table.setRange(1, 1, { states: STATE_ERROR, container: 0, offset: 0, alt: 0 });
  t.equal(tr.translate(9, abi.UBLK_IO_OP_READ, sectors(2 * SEG), 0), PLANNED);
  t.same(records(tr), [commit(9, -5)]);
});

t.test('FUA writes carry RWF_DSYNC; FLUSH fdatasyncs exactly the containers written without it', async (t) => {
  const { table, tr } = setup();
  table.setRange(3, 1, { states: 0, container: 1, offset: 40 * SEG, alt: 0 });
  tr.translate(2, abi.UBLK_IO_OP_WRITE | abi.UBLK_IO_F_FUA, 8, 0);
  tr.translate(3, abi.UBLK_IO_OP_FLUSH, 0, 0);
  t.same(records(tr), [
    { op: abi.OP_WRITE, tag: 2, fd: 10, flags: abi.RWF_DSYNC, bufOff: 0, len: 4096, off: 0 },
    commit(2, 4096),
    commit(3, 0),
  ], 'nothing to sync after a FUA write');
  tr.reset();
  tr.translate(4, abi.UBLK_IO_OP_WRITE, 8, sectors(3 * SEG));
  tr.translate(5, abi.UBLK_IO_OP_FLUSH, 0, 0);
  t.same(records(tr).slice(2), [{ op: abi.OP_FDATASYNC, tag: 5, fd: 11, flags: 0, bufOff: 0, len: 0, off: 0 }, commit(5, 0)],
    'a plain write dirties its container');
  tr.reset();
  tr.translate(6, abi.UBLK_IO_OP_DISCARD, sectors(SEG), 0);
  tr.translate(7, abi.UBLK_IO_OP_FLUSH, 0, 0);
  t.same(records(tr).slice(2).map((r) => r.fd), [10, 11, 0], 'a discard dirties its container too (and the bits stay)');
});

t.test('with sync words, a FLUSH or FUA write waits for a disk.sync covering what was installed; nothing else does', async (t) => {
  const { tr } = setup();
  t.equal(tr.translate(1, abi.UBLK_IO_OP_FLUSH, 0, 0), PLANNED, 'without sync words a FLUSH is planned at once');
  tr.reset();
  const words = new Int32Array(SYNC_WORDS);
  tr.syncWords = words;
  t.equal(tr.translate(1, abi.UBLK_IO_OP_FLUSH, 0, 0), PLANNED, 'nothing installed since the last sync: planned');
  Atomics.add(words, SYNC_MAPPED, 1); // the main thread installed an answer
  tr.reset();
  t.equal(tr.translate(2, abi.UBLK_IO_OP_FLUSH, 0, 0), SYNC, 'a FLUSH after an install waits for a sync');
  t.equal(tr.syncNeed, 1, 'of the generation installed');
  t.equal(tr.translate(3, abi.UBLK_IO_OP_WRITE | abi.UBLK_IO_F_FUA, 8, 0), SYNC, 'so does a FUA write');
  t.equal(tr.n, 0, 'neither planned anything');
  t.equal(tr.translate(4, abi.UBLK_IO_OP_WRITE, 8, 0), PLANNED, 'a plain write does not wait');
  t.equal(tr.translate(5, abi.UBLK_IO_OP_READ, 8, 0), PLANNED, 'nor a read');
  tr.syncPassed = true;
  t.equal(tr.translate(2, abi.UBLK_IO_OP_FLUSH, 0, 0), PLANNED, 'a request whose sync is done is planned');
  tr.syncPassed = false;
  Atomics.store(words, SYNC_DURABLE, 1);
  t.equal(tr.translate(6, abi.UBLK_IO_OP_WRITE | abi.UBLK_IO_F_FUA, 8, 0), PLANNED, 'once the generation is durable, FUA writes go');
  t.ok(genReached(0x7fffffff + 1 | 0, 0x7fffffff) && !genReached(0x7fffffff, 0x7fffffff + 1 | 0), 'generations compare across the Int32 wrap');
});

t.test('a FLUSH reaching more containers than the per-tag budget uses the batch reserve, then defers', async (t) => {
  const n = 40;
  const table = MappingTable.create({ segments: 64, segmentSize: SEG });
  table.setRange(0, 64, { states: 0, container: 0, offset: 0, alt: 0 });
  const fds = Int32Array.from({ length: n }, (_, id) => 100 + id);
  fds[7] = -1; // closed meanwhile: nothing to sync
  const dirty = new Int32Array(2);
  for (let id = 0; id < n; id++) dirty[id >>> 5] |= 1 << (id & 31);
  const tr = new Translator(table, fds, dirty, (64 * SEG) / 512, 4 * abi.MAX_OPS_PER_TAG + n, n);
  t.equal(tr.translate(0, abi.UBLK_IO_OP_FLUSH, 0, 0), PLANNED);
  const syncs = records(tr).filter((r) => r.op === abi.OP_FDATASYNC).map((r) => r.fd);
  t.same(syncs, [...fds].filter((fd) => fd >= 0), `${syncs.length} fdatasyncs, more than the budget of ${abi.MAX_OPS_PER_TAG - 1}`);
  const planned = tr.n;
  t.equal(tr.translate(1, abi.UBLK_IO_OP_FLUSH, 0, 0), DEFERRED, 'a second one this batch finds the reserve used');
  t.equal(tr.n, planned, 'and adds nothing');
  for (let tag = 2; tag < 4; tag++) t.equal(tr.translate(tag, abi.UBLK_IO_OP_READ, sectors(8 * SEG), 0), PLANNED, 'other requests still fit');
  tr.reset();
  t.equal(tr.translate(1, abi.UBLK_IO_OP_FLUSH, 0, 0), PLANNED, 'the next batch plans it');
  t.equal(tr.n, n, `${n - 1} fdatasyncs and a commit`);
});

t.test('reads of adjacent Zero segments are one zero fill, counted against the budget', async (t) => {
  const { table, tr } = setup();
  table.setRange(0, 8, { states: STATE_ZERO, container: 0, offset: 0, alt: 0 });
  t.equal(tr.translate(0, abi.UBLK_IO_OP_READ, sectors(8 * SEG), 0), PLANNED);
  t.same(records(tr), [{ op: abi.OP_ZERO, tag: 0, fd: 0, flags: 0, bufOff: 0, len: 8 * SEG, off: 0 }, commit(0, 8 * SEG)]);
});

t.test('DISCARD punches holes, skips Zero segments; WRITE_ZEROES with NOUNMAP zeroes the range', async (t) => {
  const { table, tr } = setup();
  table.setRange(1, 1, { states: STATE_ZERO, container: 0, offset: 0, alt: 0 });
  const punch = abi.FALLOC_FL_PUNCH_HOLE | abi.FALLOC_FL_KEEP_SIZE;
  tr.translate(4, abi.UBLK_IO_OP_DISCARD, sectors(3 * SEG), 0);
  t.same(records(tr), [
    { op: abi.OP_FALLOCATE, tag: 4, fd: 10, flags: punch, bufOff: 0, len: SEG, off: 0 },
    { op: abi.OP_FALLOCATE, tag: 4, fd: 10, flags: punch, bufOff: 0, len: SEG, off: 2 * SEG },
    commit(4, 0),
  ]);
  tr.n = 0;
  tr.translate(5, abi.UBLK_IO_OP_WRITE_ZEROES | abi.UBLK_IO_F_NOUNMAP, 16, sectors(3 * SEG));
  t.same(records(tr), [
    { op: abi.OP_FALLOCATE, tag: 5, fd: 10, flags: abi.FALLOC_FL_ZERO_RANGE | abi.FALLOC_FL_KEEP_SIZE, bufOff: 0, len: 8192, off: 3 * SEG },
    commit(5, 0),
  ]);
  tr.n = 0;
  tr.translate(6, abi.UBLK_IO_OP_WRITE_ZEROES, 16, sectors(3 * SEG));
  t.equal(records(tr)[0].flags, punch, 'without NOUNMAP write-zeroes may deallocate');
});

t.test('out-of-range, empty and unknown requests fail cleanly', async (t) => {
  const { tr } = setup(4);
  tr.translate(0, abi.UBLK_IO_OP_READ, 8, sectors(4 * SEG) - 4);
  tr.translate(1, abi.UBLK_IO_OP_WRITE, 0, 0);
  tr.translate(2, abi.UBLK_IO_OP_WRITE_SAME, 8, 0);
  t.same(records(tr), [commit(0, -5), commit(1, -5), commit(2, -95)]);
});

t.test('a missing container fd fails with EIO rather than writing elsewhere', async (t) => {
  const { table, tr } = setup();
  table.setRange(0, 1, { states: 0, container: 2, offset: 0, alt: 0 });
  tr.translate(0, abi.UBLK_IO_OP_WRITE, 8, 0);
  t.same(records(tr), [commit(0, -5)]);
});

t.test('offsets past 4 GiB split into low and high words', async (t) => {
  const table = MappingTable.create({ segments: 8, segmentSize: 64 * MB });
  table.setRange(0, 8, { states: 0, container: 0, offset: 6 * 2 ** 40, alt: 0 });
  const tr = new Translator(table, Int32Array.from([3]), new Int32Array(1), (8 * 64 * MB) / 512, 64);
  tr.translate(0, abi.UBLK_IO_OP_READ, 8, sectors(5 * 64 * MB + 4096));
  t.equal(records(tr)[0].off, 6 * 2 ** 40 + 5 * 64 * MB + 4096);
});

t.test('a request spread over too many segments fails instead of overrunning the native slots', async (t) => {
  const table = MappingTable.create({ segments: 64, segmentSize: 64 * 1024 });
  // Reverse order: no two neighbours are contiguous, so nothing merges.
  for (let i = 0; i < 64; i++) table.setRange(i, 1, { states: 0, container: 0, offset: (63 - i) * 65536, alt: 0 });
  const tr = new Translator(table, Int32Array.from([3]), new Int32Array(1), (64 * 65536) / 512, 256);
  tr.translate(0, abi.UBLK_IO_OP_READ, sectors(20 * 65536), 0);
  t.same(records(tr), [commit(0, -5)]);
  tr.n = 0;
  tr.translate(1, abi.UBLK_IO_OP_READ, sectors(8 * 65536), 0);
  t.equal(tr.n, 9, '8 pieces and a commit fit');
});

t.test('with a controller, whole-segment discards of mapped segments fault as reclaims', async (t) => {
  const { table, tr } = setup();
  table.setRange(6, 1, { states: STATE_NO_WRITE, container: 0, offset: 6 * SEG, alt: 0 });
  t.equal(tr.translate(0, abi.UBLK_IO_OP_DISCARD, sectors(SEG), sectors(2 * SEG)), PLANNED, 'without a controller a whole segment is punched');
  tr.n = 0;
  tr.reclaimWholeSegments = true;
  t.equal(tr.translate(0, abi.UBLK_IO_OP_DISCARD, sectors(SEG), sectors(2 * SEG)), FAULTED);
  t.same([tr.faultOp, tr.faultSegment], [FAULT_RECLAIM, 2], 'a mapped segment: reclaim');
  t.equal(tr.translate(0, abi.UBLK_IO_OP_WRITE_ZEROES, sectors(SEG), sectors(6 * SEG)), FAULTED);
  t.same([tr.faultOp, tr.faultSegment], [FAULT_RECLAIM, 6], 'a shared (No-write) one too: no copy for data about to go');
  t.equal(tr.translate(0, abi.UBLK_IO_OP_DISCARD, sectors(SEG / 2), sectors(3 * SEG)), PLANNED, 'half a segment is still punched');
  tr.n = 0;
  table.setRange(4, 1, { states: STATE_ZERO, container: 0, offset: 0, alt: 0 });
  t.equal(tr.translate(0, abi.UBLK_IO_OP_DISCARD, sectors(SEG), sectors(4 * SEG)), PLANNED, 'a Zero segment needs nothing');
});

t.test('Alternate entries: reads merge block by block, covered writes go to the alternate, the rest faults', async (t) => {
  const { table, tr } = setup();
  const alt = table.alternates!;
  const bits = Buffer.alloc(32);
  bits[0] = 0b0000_0110; // blocks 1 and 2 live at the alternate (container 1, 8 MiB)
  alt.set(5, 1, 8 * SEG, bits);
  table.setRange(3, 1, { states: STATE_ALTERNATE, container: 0, offset: 3 * SEG, alt: 5 });
  t.equal(tr.translate(0, abi.UBLK_IO_OP_READ, sectors(16384), sectors(3 * SEG)), PLANNED);
  t.same(records(tr), [
    { op: abi.OP_READ, tag: 0, fd: 10, flags: 0, bufOff: 0, len: 4096, off: 3 * SEG },
    { op: abi.OP_READ, tag: 0, fd: 11, flags: 0, bufOff: 4096, len: 8192, off: 8 * SEG + 4096 },
    { op: abi.OP_READ, tag: 0, fd: 10, flags: 0, bufOff: 12288, len: 4096, off: 3 * SEG + 12288 },
    commit(0, 16384),
  ], 'original, alternate (two blocks in one read), original');
  tr.n = 0;
  t.equal(tr.translate(1, abi.UBLK_IO_OP_WRITE, 8, sectors(3 * SEG + 4096 + 512)), PLANNED, 'a write inside marked blocks');
  t.same(records(tr), [{ op: abi.OP_WRITE, tag: 1, fd: 11, flags: 0, bufOff: 0, len: 4096, off: 8 * SEG + 4096 + 512 }, commit(1, 4096)], 'goes to the alternate');
  tr.n = 0;
  t.equal(tr.translate(2, abi.UBLK_IO_OP_WRITE, 16, sectors(3 * SEG + 8192)), FAULTED, 'a write reaching an unmarked block faults');
  t.same([tr.faultOp, tr.faultSegment, tr.faultStates, tr.faultOffset, tr.faultLength], [FAULT_WRITE, 3, STATE_ALTERNATE, 8192, 8192], 'naming its piece of the segment');
  t.equal(tr.n, 0, 'and plans nothing');
  t.equal(tr.translate(3, abi.UBLK_IO_OP_DISCARD, 8, sectors(3 * SEG)), FAULTED, 'a discard faults (the controller folds first)');
  alt.set(5, 1, 8 * SEG, Buffer.alloc(32, 0x55)); // every other block: a 128 KiB read would need 32 pieces
  t.equal(tr.translate(4, abi.UBLK_IO_OP_READ, sectors(128 * 1024), sectors(3 * SEG)), FAULTED, 'a read too fragmented for its records faults');
  t.same([tr.faultOp, tr.faultStates], [FAULT_READ, STATE_ALTERNATE], 'as a read of an Alternate entry (the controller folds it)');
});

t.test('faults name the piece of the segment: offset and length', async (t) => {
  const { table, tr } = setup();
  table.setRange(1, 1, { states: STATE_NO_WRITE, container: 0, offset: SEG, alt: 0 });
  t.equal(tr.translate(0, abi.UBLK_IO_OP_WRITE, sectors(SEG), sectors(SEG / 2)), FAULTED);
  t.same([tr.faultSegment, tr.faultOffset, tr.faultLength], [1, 0, SEG / 2], 'the second half of the request, in segment 1');
});

t.test('every write, wherever it starts, is planned over exactly its bytes at the mapped offsets', async (t) => {
  const { table, tr } = setup();
  table.setRange(1, 1, { states: 0, container: 1, offset: 7 * SEG, alt: 0 });
  let wrong = 0;
  // Every 4 KiB start across two segments, 4 KiB and 12 KiB long (the latter crossing the boundary).
  for (let start = 0; start < sectors(2 * SEG); start += 8) {
    for (const len of [4096, 12288]) {
      tr.n = 0;
      tr.translate(2, abi.UBLK_IO_OP_WRITE, sectors(len), start);
      const recs = records(tr);
      const writes = recs.filter((r) => r.op === abi.OP_WRITE);
      let pos = start * 512;
      let buf = 0;
      let ok = recs.at(-1)?.op === abi.OP_COMMIT && recs.at(-1)?.fd === len;
      for (const w of writes) {
        const seg = Math.floor(pos / SEG);
        const expectOff = seg === 1 ? 7 * SEG + (pos - SEG) : pos;
        if (w.off !== expectOff || w.bufOff !== buf || w.fd !== (seg === 1 ? 11 : 10)) ok = false;
        pos += w.len;
        buf += w.len;
      }
      if (!ok || buf !== len) wrong++;
    }
  }
  t.equal(wrong, 0, 'no write planned short, misplaced or dropped');
});

t.test('ahead hints: a sequential writer inside a mapped window names the first Zero segment past it, once', async (t) => {
  const table = MappingTable.create({ segments: 200, segmentSize: SEG });
  table.setRange(0, 200, { states: STATE_ZERO, container: 0, offset: 0, alt: 0 });
  table.setRange(0, 10, { states: 0, container: 0, offset: 0, alt: 0 }); // segments 0..9 mapped: a window up to 9
  const tr = new Translator(table, Int32Array.from([10]), new Int32Array(1), (200 * SEG) / 512, 64 * abi.MAX_OPS_PER_TAG);
  const write = (pos: number, len: number): number => {
    t.equal(tr.translate(0, abi.UBLK_IO_OP_WRITE, sectors(len), sectors(pos)), PLANNED);
    tr.reset();
    return tr.aheadHint(sectors(pos), sectors(len));
  };
  t.equal(write(0, SEG), -1, 'segment 0 has nothing before it');
  t.equal(write(SEG, 4096), 10, 'entering segment 1 after the write that ended there: segment 10 is the first Zero one');
  t.equal(tr.aheadFrom, 1, 'from segment 1');
  t.equal(write(SEG + 4096, SEG - 4096), -1, 'inside a segment: nothing');
  t.equal(write(2 * SEG, SEG), -1, 'the same Zero segment is not named twice');
  table.setRange(10, 20, { states: 0, container: 0, offset: 0, alt: 0 }); // the next window arrived: 10..29
  t.equal(write(3 * SEG, SEG), 30, 'past the next window now');
  t.equal(write(8 * SEG, SEG), -1, 'a jump within the window is not a sequential writer\'s step');
  t.equal(write(9 * SEG, SEG), -1, 'nor the hint already given');
  table.setRange(30, 170, { states: 0, container: 0, offset: 0, alt: 0 }); // everything mapped
  t.equal(write(10 * SEG, SEG), -1, 'nothing Zero within the scan (64 MiB of 1 MiB segments)');
  table.setRange(150, 1, { states: STATE_ZERO, container: 0, offset: 0, alt: 0 });
  t.equal(write(80 * SEG, SEG), -1, 'a writer arriving from elsewhere: nothing');
  t.equal(write(81 * SEG, SEG), -1, 'segment 150 lies beyond its scan');
  t.equal(write(86 * SEG, SEG), -1, 'nor a step that skips segments');
  t.equal(write(87 * SEG, SEG), 150, 'within 64 segments of it: named');
});

t.test('ahead hints stop at an Invalid segment and need a mapped segment past the write', async (t) => {
  const table = MappingTable.create({ segments: 40, segmentSize: SEG });
  table.setRange(0, 40, { states: 0, container: 0, offset: 0, alt: 0 });
  table.setRange(6, 1, { states: STATE_INVALID, container: 0, offset: 0, alt: 0 }); // a lost lease, say
  table.setRange(8, 1, { states: STATE_ZERO, container: 0, offset: 0, alt: 0 });
  table.setRange(12, 1, { states: STATE_ZERO, container: 0, offset: 0, alt: 0 });
  const tr = new Translator(table, Int32Array.from([10]), new Int32Array(1), (40 * SEG) / 512, 64 * abi.MAX_OPS_PER_TAG);
  const hint = (pos: number, len = SEG) => tr.aheadHint(sectors(pos), sectors(len));
  t.equal(hint(3 * SEG), -1, 'the first write only sets where the writer is');
  t.equal(hint(4 * SEG), -1, 'Invalid at 6 before any Zero segment: nothing to ask for');
  t.equal(hint(10 * SEG, 4096), -1, 'from elsewhere');
  t.equal(hint(10 * SEG + 4096, SEG - 4096), -1, 'not at a segment start');
  t.equal(hint(11 * SEG), -1, 'Zero right after the write: the writer faults there itself');
  t.equal(hint(13 * SEG, 2 * SEG), -1, 'segment 12 before it is Zero');
  t.equal(hint(15 * SEG), -1, 'nothing Zero past 15 within the table');
});
