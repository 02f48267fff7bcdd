// The snapshot part of `npm run bench` (the issue's item 9), through the real CLI and controller:
//  1. snapshot of a 1 TiB disk (1,048,576 entries of 1 MiB) while it is attached: every agent holding it sets
//     No-write on all entries with the blocking flag, then the store copies the table (target < 200 ms). Once
//     for an empty thin disk, once for a thick 64 GiB disk (65,536 mapped entries; bench.mjs --snapshot-thick GiB),
//     whose snapshot also adds a reference to each mapped segment: that part grows with the mapped entries, which
//     for a thin disk means with the data written;
//  2. the first write after a snapshot: 4k writes at random offsets, one per segment, to shared segments of an
//     attached, fully written disk, at QD 1 and QD 16 (each one faults; the controller allocates a segment,
//     copies 1 MiB, remaps: `--partial copy`; or allocates an alternate and copies the 4 KiB block: `--partial
//     bitmap`), with the space amplification (allocated bytes, and bytes the container file really gained, per
//     byte written) and the fold of the bitmap clone's alternates afterwards;
//  3. 4k randread (the fio parameters of bench-run.mjs) on the 10th clone of a chain (each generation snapshotted
//     and cloned from the previous, the data written at generation 0) against the plain origin, alternating.
// hostSnapshotBench() is the ublk-free part, run natively on the host by bench.mjs (requests timed on the
// controller's socket, a stand-in agent from bench-controller.mjs attached); snapshotBench() runs where ublk
// exists (the VM of `npm run bench`), with the real agent and devices.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { pathToFileURL } from 'node:url';
import { NO_DEVICE_HOST, session } from './bench-controller.mjs';

const MiB = 1 << 20;
const GiB = 1024 * MiB;
const BIG_SIZE = 2 ** 40;
/** The thick disk of the host part: fully mapped 1 TiB, 1,048,576 mapped entries (created in one allocation run). */
const THICK_SIZE = 1024 * GiB;
const CHAIN = 10;
const QUEUES = 1;
const DEPTH = 128;
/** The real agent's host id in snapshotBench (its own controller, so distinct from bench-controller's). */
const DEFAULT_HOST = 'bench-snap';
const SNAPSHOT_TARGET_MS = 200;

const ms = (t0) => Number((performance.now() - t0).toFixed(1));
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const mean = (xs) => xs.reduce((a, b) => a + b, 0) / xs.length;
const round = (x, d = 3) => Number(x.toFixed(d));

async function stateBits(root) {
  const { STATE_NO_WRITE } = await import(pathToFileURL(path.join(root, 'dist', 'table', 'mapping-table.js')).href);
  const { FAULT_WRITE } = await import(pathToFileURL(path.join(root, 'dist', 'io', 'translator.js')).href);
  return { STATE_NO_WRITE, FAULT_WRITE };
}

/** Sum of usedBytes over all containers. */
async function usedBytes(cliJson) {
  return (await cliJson('container', 'ls')).reduce((a, c) => a + c.usedBytes, 0);
}

/** Writes `bytes` of random data at the start of a file (so that copies move real data, not holes). */
function fillRandom(file, bytes, from = 0) {
  const fd = fs.openSync(file, 'r+');
  try {
    const buf = Buffer.alloc(4 * MiB);
    for (let off = 0; off < bytes; off += buf.length) {
      for (let k = 0; k < buf.length; k += 65536) buf.fill(Math.random() * 256, k, k + 65536);
      buf.writeUInt32LE(off / MiB, 0);
      fs.writeSync(fd, buf, 0, Math.min(buf.length, bytes - off), from + off);
    }
    fs.fdatasyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * The ublk-free part, natively on the host: snapshot requests with a stand-in agent holding the disk (its
 * table.states over all entries is the agent's share), the controller's side of copy-on-write faults sent by
 * the stand-in agent, and the cost of building the clone chain. o: { root, cows, log }.
 */
export async function hostSnapshotBench(o) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vdisk-bench-snap-'));
  const dataDir = path.join(dir, 'data');
  const { cli, cliJson, rpc, standIn } = await session(o.root, dataDir);
  const { STATE_NO_WRITE, FAULT_WRITE } = await stateBits(o.root);
  const out = { dir, fsType: fsType(dir) };
  await cli('controller', 'start');
  const ctlPid = (await cliJson('controller', 'status')).pid;
  const agent = await standIn();
  const attached = new Set();
  const attach = async (name) => {
    const r = await rpc('disk.attach', { name, hostId: NO_DEVICE_HOST, queues: QUEUES, depth: DEPTH });
    attached.add(name);
    return r.ms;
  };
  const detach = async (name) => {
    await rpc('disk.detach', { name, hostId: NO_DEVICE_HOST, force: false });
    attached.delete(name);
  };
  /** n snapshots of an attached disk as requests; the stand-in agent's table.states time of each. */
  async function snapshots(disk, n, prefix) {
    const runs = [];
    for (let i = 0; i < n; i++) {
      agent.marks.tableStates = undefined;
      const r = await rpc('disk.snapshot', { name: disk, snapshot: `${prefix}${i}` });
      const st = agent.marks.tableStates;
      if (!st || st.count !== r.result.segments || st.blocking !== true) throw new Error(`snapshot of ${disk}: the agent got ${JSON.stringify(st)}`);
      runs.push({ ms: r.ms, agentStatesMs: st.ms });
    }
    return { ms: median(runs.map((r) => r.ms)), agentStatesMs: median(runs.map((r) => r.agentStatesMs)), runsMs: runs.map((r) => r.ms) };
  }
  try {
    const status = [];
    for (let i = 0; i < 3; i++) status.push((await cli('controller', 'status', '--json')).ms);
    out.cliStartupMs = median(status);

    // ---- 1a. an empty thin 1 TiB disk, attached
    await cli('container', 'add', 'big', '--path', path.join(dir, 'big.img'), '--size', '2G');
    await cli('create', 'thin', '--size', '1T', '--segment-size', '1M', '--container', 'big');
    const thin = { size: BIG_SIZE, entries: BIG_SIZE / MiB, mappedEntries: 0 };
    thin.attachMs = await attach('thin');
    thin.snapshotAttached = await snapshots('thin', 3, 'thin-s');
    thin.snapshotCliMs = (await cli('snapshot', 'thin', 'thin-cli')).ms;
    await detach('thin');
    thin.snapshotDetachedMs = (await rpc('disk.snapshot', { name: 'thin', snapshot: 'thin-d' })).ms;
    thin.cloneMs = (await rpc('disk.clone', { snapshot: 'thin-d', name: 'thin-c' })).ms;
    for (const n of ['thin-c', 'thin-d', 'thin-cli', 'thin-s0', 'thin-s1', 'thin-s2', 'thin']) await rpc('disk.rm', { name: n });
    out.thin1TiB = thin;
    o.log(`host snapshot: 1 TiB thin attached ${thin.snapshotAttached.ms} ms (agent's table.states ${thin.snapshotAttached.agentStatesMs} ms), ` +
      `detached ${thin.snapshotDetachedMs} ms, CLI ${thin.snapshotCliMs} ms`);

    // ---- 1b. a thick 64 GiB disk (65,536 mapped entries; o.thickGiB to change) on a sparse container, attached
    const cows = o.cows;
    const thickSize = (o.thickGiB ?? THICK_SIZE / GiB) * GiB;
    const thickFile = path.join(dir, 'thick.img');
    // Room for the label's MiB, the disk, and the copies and alternates of 4 x cows segments (a disk with
    // --container allocates only there).
    await cli('container', 'add', 'thick', '--path', thickFile, '--size', String(MiB + thickSize + 4 * cows * MiB));
    const thick = { size: thickSize, entries: thickSize / MiB, mappedEntries: thickSize / MiB };
    thick.createRequestMs = (await rpc('disk.create', { name: 'thick', size: thickSize, segmentSize: MiB, container: 'thick', thick: true, partial: 'copy' })).ms;
    thick.attachMs = await attach('thick');
    thick.snapshotAttached = await snapshots('thick', 3, 'thick-s');
    thick.perMappedEntryUs = round((thick.snapshotAttached.ms - out.thin1TiB.snapshotAttached.ms) * 1000 / thick.mappedEntries, 2);
    o.log(`host snapshot: thick ${thickSize / GiB} GiB (${thick.mappedEntries} mapped) created in ${thick.createRequestMs} ms, snapshot attached ${thick.snapshotAttached.ms} ms`);

    // ---- 2. the controller's side of the first write after a snapshot: the stand-in agent sends write faults
    // for one 4 KiB piece of No-write segments (shared with the snapshots): --partial copy allocates, copies
    // 1 MiB, fdatasyncs, commits; --partial bitmap allocates an alternate, copies 4 KiB, fdatasyncs, commits.
    // The thick disk is --partial copy; a clone of its first snapshot is --partial bitmap.
    fillRandom(thickFile, 2 * cows * MiB, MiB); // thick allocation starts after the label: segment i is the file's MiB i + 1
    await rpc('disk.clone', { snapshot: 'thick-s0', name: 'thick-b', partial: 'bitmap' });
    await attach('thick-b');
    thick.cow = [];
    for (const [disk, partial] of [['thick', 'copy'], ['thick-b', 'bitmap']]) {
      const { id } = (await rpc('disk.info', { name: disk })).result;
      for (const [i, c] of [1, 16].entries()) {
        const before = await usedBytes(cliJson);
        let next = i * cows;
        const lat = [];
        const t0 = performance.now();
        await Promise.all(Array.from({ length: c }, async () => {
          while (next < (i + 1) * cows) {
            const segment = next++;
            const offset = Math.floor(Math.random() * 256) * 4096;
            const t1 = performance.now();
            const r = await agent.conn.request('fault', { diskId: id, op: FAULT_WRITE, segment, states: STATE_NO_WRITE, offset, length: 4096 }, { timeoutMs: 0 });
            lat.push(performance.now() - t1);
            if (r.result?.action !== 'entry' || r.result.entry.states & STATE_NO_WRITE) throw new Error(`COW fault on segment ${segment}: ${JSON.stringify(r.result)}`);
            if ((partial === 'bitmap') !== (r.result.alternate !== undefined)) throw new Error(`COW fault on ${disk} segment ${segment}: ${JSON.stringify(r.result)}`);
          }
        }));
        const elapsed = performance.now() - t0;
        const growth = (await usedBytes(cliJson)) - before;
        lat.sort((x, y) => x - y);
        thick.cow.push({ partial, concurrency: c, faults: cows, elapsedMs: round(elapsed, 1), faultsPerSec: Math.round(cows / (elapsed / 1000)),
          meanMs: round(mean(lat), 2), p99Ms: round(lat[Math.min(lat.length - 1, Math.ceil(lat.length * 0.99) - 1)], 2),
          usedGrowthBytes: growth, growthOk: growth === cows * MiB });
      }
    }
    o.log(`host snapshot: controller-side COW faults ${thick.cow.map((f) => `${f.partial} ${f.faultsPerSec}/s at ${f.concurrency}`).join(', ')}`);
    await detach('thick-b');
    await rpc('disk.rm', { name: 'thick-b' });
    await detach('thick');

    // ---- 3. building a 10-deep clone chain (each generation: snapshot of the previous, then a clone of it)
    thick.chain = [];
    let prev = 'thick';
    for (let g = 1; g <= CHAIN; g++) {
      const s = (await rpc('disk.snapshot', { name: prev, snapshot: `g${g}s` })).ms;
      const c = (await rpc('disk.clone', { snapshot: `g${g}s`, name: `g${g}` })).ms;
      thick.chain.push({ generation: g, snapshotMs: s, cloneMs: c });
      prev = `g${g}`;
    }
    const cr = await cli('check');
    thick.checkOk = true;
    thick.checkCliMs = cr.ms;
    // Removing a snapshot drops a reference per mapped entry.
    thick.rmSnapshotRequestMs = (await rpc('disk.rm', { name: 'thick-s0' })).ms;
    out.thick = thick;
    o.log(`host snapshot: chain of ${CHAIN} (snapshot + clone) ${thick.chain.map((x) => round(x.snapshotMs + x.cloneMs, 0)).join(', ')} ms; vdisk check ok`);
  } finally {
    for (const name of attached) await detach(name).catch((e) => o.log(`cleanup: ${e.message}`));
    await agent.conn.close().catch(() => {});
    await stopController(cli, ctlPid, o.log);
    fs.rmSync(dir, { recursive: true, force: true });
  }
  return out;
}

/**
 * Where ublk exists (the VM): the real agent. o: { root, dir, file (the bench's 1 GiB file of random data),
 * runtime, rounds, cows, fio, sh, log, cliStartupMs }. Returns the report's `snapshot` section.
 * o.hostId with o.agentRunning: an agent of that host id is already connected (a dry run of the control flow).
 */
export async function snapshotBench(o) {
  const HOST = o.hostId ?? DEFAULT_HOST;
  const dataDir = path.join(o.dir, 'bench-snap-data');
  const spare = path.join(o.dir, 'bench-snap-spare.img');
  const { cli, cliJson, rpc } = await session(o.root, dataDir);
  const out = { inVm: process.env.VDISK_IN_VM === '1', host: HOST, queues: QUEUES, depth: DEPTH };
  const attached = new Set();
  let agentStarted = false;
  let ok = false;
  const attach = async (name) => {
    const r = await cliJson('attach', name, '--host-id', HOST, '--queues', String(QUEUES), '--depth', String(DEPTH));
    attached.add(name);
    return r.device;
  };
  const detach = async (name) => {
    await cli('detach', name);
    attached.delete(name);
  };
  await cli('controller', 'start');
  const ctlPid = (await cliJson('controller', 'status')).pid;
  try {
    if (!o.agentRunning) {
      await cli('agent', 'start', '--host-id', HOST);
      agentStarted = true;
    }

    // ---- 1. snapshot of an attached 1 TiB thin disk, the real agent holding it with its device started
    o.log('snapshot: 1 TiB thin disk, attached, snapshot requests');
    await cli('container', 'add', 'big', '--path', path.join(o.dir, 'bench-snap-big.img'), '--size', '2G');
    await cli('create', 'thin', '--size', '1T', '--segment-size', '1M', '--container', 'big');
    await attach('thin');
    const thin = { size: BIG_SIZE, entries: BIG_SIZE / MiB, runsMs: [] };
    for (let i = 0; i < 2; i++) thin.runsMs.push((await rpc('disk.snapshot', { name: 'thin', snapshot: `thin-s${i}` })).ms);
    thin.ms = Math.min(...thin.runsMs);
    thin.cliMs = (await cli('snapshot', 'thin', 'thin-cli')).ms;
    if (o.cliStartupMs) thin.cliMinusStartupMs = round(thin.cliMs - o.cliStartupMs, 1);
    await detach('thin');
    for (const n of ['thin-s0', 'thin-s1', 'thin-cli', 'thin']) await cli('rm', n);
    // Gone, so that the origin below (no --container: containers in id order) fills the bench file first.
    await cli('container', 'rm', 'big');
    out.thin1TiB = thin;
    o.log(`snapshot: 1 TiB thin attached ${thin.runsMs.join(', ')} ms as requests, CLI ${thin.cliMs} ms`);

    // ---- the origin: a thick disk on the bench file, full of random data (thick allocation starts after the
    // container's label, so segment i is the file's MiB i + 1). Copies go to a second, sparse container.
    const size = fs.statSync(o.file).size - MiB;
    await cli('container', 'add', 'data', '--path', o.file);
    await cli('container', 'add', 'spare', '--path', spare, '--size', '2G');
    await cli('create', 'origin', '--size', String(size), '--segment-size', '1M', '--thick');
    const oinfo = await cliJson('info', 'origin');
    if (oinfo.perContainer.data !== size || Object.keys(oinfo.perContainer).length !== 1) {
      throw new Error(`the origin is not all on the bench file: ${JSON.stringify(oinfo.perContainer)}`);
    }

    // ---- 3. a chain of 10 clones, read against the origin
    o.log(`snapshot: a chain of ${CHAIN} clones, 4k randread on the last one vs the origin`);
    const chain = { depth: CHAIN, build: [] };
    let prev = 'origin';
    for (let g = 1; g <= CHAIN; g++) {
      const s = (await rpc('disk.snapshot', { name: prev, snapshot: `g${g}s` })).ms;
      const c = (await rpc('disk.clone', { snapshot: `g${g}s`, name: `g${g}` })).ms;
      chain.build.push({ generation: g, snapshotMs: s, cloneMs: c });
      prev = `g${g}`;
    }
    const originDev = await attach('origin');
    const lastDev = await attach(prev);
    chain.lastSameDataAsFile = sameData(lastDev, o.file, size);
    chain.runs = { origin: [], clone: [] };
    for (let r = 0; r < o.rounds; r++) {
      const order = r % 2 === 0 ? ['origin', 'clone'] : ['clone', 'origin'];
      for (const which of order) chain.runs[which].push(o.fio(which === 'origin' ? originDev : lastDev, 'randread'));
      o.log(`snapshot: round ${r + 1} randread: origin ${chain.runs.origin.at(-1).iops.toFixed(0)} IOPS, ` +
        `clone ${CHAIN} ${chain.runs.clone.at(-1).iops.toFixed(0)} IOPS`);
    }
    const oi = mean(chain.runs.origin.map((x) => x.iops));
    const ci = mean(chain.runs.clone.map((x) => x.iops));
    chain.summary = { originIops: Math.round(oi), cloneIops: Math.round(ci), ratio: round(ci / oi) };
    out.cloneChain = chain; // the last clone stays attached: it must still read the file's data after the writes below

    // ---- 2. first writes after a snapshot: two clones of a snapshot of the origin, one per --partial mode,
    // written the same way (their segments are shared with the snapshot, the origin and the chain)
    const cow = { segments: o.cows, segmentSize: MiB, modes: {} };
    const t0 = performance.now();
    cow.snapshotRequestMs = (await rpc('disk.snapshot', { name: 'origin', snapshot: 'cow-snap' })).ms;
    cow.snapshotWithConnectMs = ms(t0);
    cow.snapshotEntries = size / MiB;
    const fioWrite = (dev, offsetMiB, qd) => {
      // One 4 KiB write at a random offset in each 1 MiB segment of [offset, offset + cows MiB), in order.
      const w = fioJson(o.sh, ['--name=cow', `--filename=${dev}`, '--rw=randwrite', '--bs=4k', '--zonemode=strided', '--zonesize=4k',
        '--zonerange=1M', `--offset=${offsetMiB}M`, `--size=${o.cows}M`, `--number_ios=${o.cows}`, `--iodepth=${qd}`, '--numjobs=1',
        '--ioengine=libaio', '--direct=1', '--randrepeat=0']).write;
      return {
        iodepth: qd, ios: w.total_ios, elapsedMs: w.runtime, iops: Math.round(w.total_ios / (w.runtime / 1000)), kibPerSec: w.bw,
        clatMeanMs: round(w.clat_ns.mean / 1e6, 2), clatP99Ms: round(w.clat_ns.percentile['99.000000'] / 1e6, 2),
      };
    };
    for (const partial of ['copy', 'bitmap']) {
      const name = `cow-${partial}`;
      await rpc('disk.clone', { snapshot: 'cow-snap', name, partial });
      const dev = await attach(name);
      const m = { runs: [] };
      o.log(`snapshot: first 4k writes after a snapshot, --partial ${partial}, ${o.cows} segments at QD 1 and QD 16`);
      for (const [i, qd] of [1, 16].entries()) {
        const before = await usedBytes(cliJson);
        const physBefore = physicalBytes(spare);
        const run = fioWrite(dev, i * o.cows, qd);
        run.usedGrowthBytes = (await usedBytes(cliJson)) - before;
        run.physicalGrowthBytes = physicalBytes(spare) - physBefore;
        run.bytesWritten = run.ios * 4096;
        run.spaceAmplification = round(run.usedGrowthBytes / run.bytesWritten, 1);
        run.physicalAmplification = round(run.physicalGrowthBytes / run.bytesWritten, 1);
        run.growthOk = run.usedGrowthBytes === o.cows * MiB && run.ios === o.cows;
        m.runs.push(run);
        o.log(`snapshot: --partial ${partial} COW writes at QD ${qd}: ${run.ios} in ${run.elapsedMs} ms = ${run.iops}/s, clat mean ${run.clatMeanMs} ms, ` +
          `p99 ${run.clatP99Ms} ms; allocated +${run.usedGrowthBytes / MiB} MiB, written to the container +${(run.physicalGrowthBytes / MiB).toFixed(1)} MiB`);
      }
      // A second random 4k write into each of the first segments: no fault for --partial copy (the segments are
      // the clone's own now); for bitmap, a fault wherever the new block is not yet at the alternate (almost always).
      m.rewrite = fioWrite(dev, 0, 1);
      // The clone reads its new data, the last chain clone still reads the shared segments of the bench file
      // (read with O_DIRECT, past the page cache), and the file itself was not written.
      const written = [[0, Math.min(4, o.cows)], [o.cows, Math.min(4, o.cows)]];
      m.sharedUnchanged = written.every(([first, n]) => readDirect(lastDev, first, n).equals(readFile(o.file, first, n)));
      m.cloneChanged = written.every(([first, n]) => !readDirect(dev, first, n).equals(readFile(o.file, first, n)));
      const after = await cliJson('info', name);
      m.after = { allocatedBytes: after.allocatedBytes, exclusiveBytes: after.exclusiveBytes, sharedBytes: after.sharedBytes, alternates: after.alternates };
      if (partial === 'bitmap') {
        const f = await cli('fold', name, '--json');
        m.foldAll = { folded: JSON.parse(f.out).folded, cliMs: f.ms };
      }
      await detach(name);
      cow.modes[partial] = m;
    }
    out.firstWriteAfterSnapshot = cow;
    await detach(prev);
    await detach('origin');
    await cli('check');
    out.checkOk = true;
    ok = true;
  } finally {
    for (const name of attached) await cli('detach', name).catch((e) => o.log(`cleanup: ${e.message}`));
    if (agentStarted) await cli('agent', 'stop', '--host-id', HOST).catch((e) => o.log(`cleanup: ${e.message}`));
    await stopController(cli, ctlPid, o.log);
    for (const f of [spare, path.join(o.dir, 'bench-snap-big.img')]) fs.rmSync(f, { force: true });
    wipeLabel(o.file, o.log);
    if (ok) fs.rmSync(dataDir, { recursive: true, force: true });
    else o.log(`snapshot: the controller's data and logs stay in ${dataDir}`);
  }
  return out;
}

/**
 * `vdisk controller stop`, then makes sure that the controller we started is gone: after a failure (a request
 * that never got its answer) it may hang in its own shutdown, and it must not outlive the bench.
 */
async function stopController(cli, pid, log) {
  await cli('controller', 'stop').catch((e) => log(`cleanup: ${e.message}`));
  const alive = () => { try { process.kill(pid, 0); return true; } catch { return false; } };
  for (let i = 0; i < 100 && alive(); i++) await new Promise((r) => setTimeout(r, 50));
  if (alive()) {
    log(`cleanup: controller ${pid} still running 5 s after controller stop: killing it`);
    process.kill(pid, 'SIGKILL');
  }
}

/** Segments [first, first + n) of a device (1 MiB segments), read with O_DIRECT. */
function readDirect(dev, first, n) {
  const r = spawnSync('dd', [`if=${dev}`, 'iflag=direct', 'bs=1M', `skip=${first}`, `count=${n}`, 'status=none'], { maxBuffer: (n + 1) * MiB });
  if (r.status !== 0) throw new Error(`dd from ${dev}: ${r.stderr}`);
  return r.stdout;
}

/** The bench file is the bench's own: its container label goes with the data dir (a next run adds it again). */
function wipeLabel(file, log) {
  const fd = fs.openSync(file, 'r+');
  try {
    const head = Buffer.alloc(8);
    fs.readSync(fd, head, 0, 8, 0);
    if (head.toString('latin1') !== 'VDISKLBL') return;
    fs.writeSync(fd, Buffer.alloc(4096), 0, 4096, 0);
    fs.fdatasyncSync(fd);
    log(`snapshot: wiped the container label of ${file}`);
  } finally {
    fs.closeSync(fd);
  }
}

function readFile(file, first, n) {
  const buf = Buffer.alloc(n * MiB);
  const fd = fs.openSync(file, 'r');
  try {
    fs.readSync(fd, buf, 0, buf.length, (first + 1) * MiB); // after the label's MiB
  } finally {
    fs.closeSync(fd);
  }
  return buf;
}

/** Compares a few 4 KiB blocks read through the device with the file at the same offsets after its label MiB. */
function sameData(dev, file, size) {
  const offsets = [0, Math.floor(size / 2 / MiB) * MiB + 4096, size - 4096];
  const a = Buffer.alloc(4096);
  const b = Buffer.alloc(4096);
  const fa = fs.openSync(dev, 'r');
  const fb = fs.openSync(file, 'r');
  try {
    return offsets.every((off) => {
      fs.readSync(fa, a, 0, 4096, off);
      fs.readSync(fb, b, 0, 4096, off + MiB); // the disk starts after the file's label MiB
      return a.equals(b);
    });
  } finally {
    fs.closeSync(fa);
    fs.closeSync(fb);
  }
}

/** Bytes the file really occupies (st_blocks): what a container gave to copies and alternates. */
function physicalBytes(file) {
  return fs.statSync(file).blocks * 512;
}

function fsType(dir) {
  const r = spawnSync('stat', ['-f', '-c', '%T', dir], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : 'unknown';
}

function fioJson(sh, args) {
  const out = sh('fio', [...args, '--output-format=json']);
  return JSON.parse(out.slice(out.indexOf('{'))).jobs[0];
}

function table(title, rows) {
  const w = Math.max(title.length, ...rows.map((r) => r[0].length));
  const v = Math.max(10, ...rows.map((r) => r[1].length));
  console.log(`\n${title.padEnd(w)}  ${'value'.padStart(v)}   target      met`);
  for (const r of rows) console.log(`${r[0].padEnd(w)}  ${r[1].padStart(v)}   ${r[2].padEnd(10)}  ${r[3]}`);
}

const sec = (x) => `${(x / 1000).toFixed(3)} s`;
const yes = (ok) => (ok ? 'yes' : 'NO');
const snapRow = (label, x) => [label, sec(x), `< ${SNAPSHOT_TARGET_MS / 1000} s`, yes(x < SNAPSHOT_TARGET_MS)];

/** The host rows (the ublk-free part). */
export function printSnapshotHost(h) {
  const t = h.thin1TiB;
  const k = h.thick;
  const g = `${k.size / GiB} GiB`;
  const n = k.mappedEntries.toLocaleString('en-US');
  const fullyMapped = t.snapshotAttached.ms + (k.perMappedEntryUs * BIG_SIZE / MiB) / 1000;
  const chain = k.chain.map((g) => g.snapshotMs + g.cloneMs);
  table(`snapshots, host natively (stand-in agent attached, no ublk; ${h.fsType})`, [
    snapRow('1 TiB thin, empty: snapshot, attached (request, median of 3)', t.snapshotAttached.ms),
    ['  of which the agent: No-write on 1,048,576 entries, blocking', sec(t.snapshotAttached.agentStatesMs), '', ''],
    ['  the same disk detached (store only, request)', sec(t.snapshotDetachedMs), '', ''],
    [`  CLI wall ${sec(t.snapshotCliMs)}, minus CLI start-up`, sec(t.snapshotCliMs - h.cliStartupMs), '', ''],
    [`${g} thick (${n} mapped entries): create (request)`, sec(k.createRequestMs), '', ''],
    snapRow(`${g} thick: snapshot, attached (request, median of 3)`, k.snapshotAttached.ms),
    [`  of which the agent: No-write on ${n} entries, blocking`, sec(k.snapshotAttached.agentStatesMs), '', ''],
    ['  cost per mapped entry (over the empty thin one)', `${k.perMappedEntryUs} us`, '', ''],
    ...(k.size < BIG_SIZE ? [snapRow('  fully mapped 1 TiB, EXTRAPOLATED from that (not measured)', fullyMapped)] : []),
    ...k.cow.map((f) => [`controller-side COW faults, 4k piece, --partial ${f.partial} (${f.partial === 'copy' ? '1 MiB' : '4 KiB'} copied), ${f.concurrency} at a time (${f.faults}): rate, mean/p99`,
      `${f.faultsPerSec} /s, ${f.meanMs}/${f.p99Ms} ms`, '-',
      f.growthOk ? '(used +1 MiB each)' : 'USED GROWTH WRONG']),
    [`${g} chain of ${CHAIN}: snapshot + clone per generation (median)`, sec(median(chain)), '', ''],
    [`${g}: rm of a snapshot (compares ${n} entries with its family)`, sec(k.rmSnapshotRequestMs), '', ''],
    ['vdisk check after all that', k.checkOk ? 'consistent' : 'FAILED', 'exit 0', yes(k.checkOk)],
  ]);
}

/** The rows of the part with the real agent and devices (the VM of `npm run bench`). */
export function printSnapshot(v) {
  const t = v.thin1TiB;
  const c = v.firstWriteAfterSnapshot;
  const ch = v.cloneChain;
  const lat = (r) => `${r.iops} /s, ${r.clatMeanMs}/${r.clatP99Ms} ms`;
  table(`snapshots (in the ${v.inVm ? 'VM: absolute times are TCG times' : 'native run'}; real agent, devices started)`, [
    v.inVm ? ['1 TiB thin, empty: snapshot, attached (request, best of 2)', sec(t.ms), `< ${SNAPSHOT_TARGET_MS / 1000} s`, 'n/a (TCG)']
      : snapRow('1 TiB thin, empty: snapshot, attached (request, best of 2)', t.ms),
    [`  CLI wall ${sec(t.cliMs)}, minus CLI start-up`, t.cliMinusStartupMs === undefined ? '-' : sec(t.cliMinusStartupMs), '', ''],
    [`${c.snapshotEntries} MiB thick origin (${c.snapshotEntries} mapped entries): snapshot, attached`, sec(c.snapshotRequestMs), '', ''],
    ...Object.entries(c.modes).flatMap(([mode, m]) => [
      ...m.runs.map((r) => [`first 4k write after snapshot, --partial ${mode}, QD ${r.iodepth} (${r.ios}): IOPS, clat mean/p99`, lat(r), '-',
        r.growthOk ? '(allocated ok)' : 'ALLOCATION WRONG']),
      ...m.runs.map((r) => [`  --partial ${mode}, QD ${r.iodepth}: amplification, allocated / written to the container`,
        `${r.spaceAmplification}x / ${r.physicalAmplification}x`, '-', '']),
      [`  --partial ${mode}: a second 4k write per segment (a new random block), QD 1`, lat(m.rewrite), '', ''],
      [`  --partial ${mode}: clone changed, clone 10 still reads the old data`, `${yes(m.cloneChanged)}, ${yes(m.sharedUnchanged)}`, 'yes, yes',
        yes(m.cloneChanged && m.sharedUnchanged)],
      ...(m.foldAll ? [[`  --partial ${mode}: vdisk fold of ${m.after.alternates} alternates (CLI wall)`, sec(m.foldAll.cliMs), '', '']] : []),
    ]),
    ...(c.modes.copy && c.modes.bitmap ? [['first-write latency QD 1, bitmap / copy (clat mean)',
      (c.modes.bitmap.runs[0].clatMeanMs / c.modes.copy.runs[0].clatMeanMs).toFixed(2), '< 1', yes(c.modes.bitmap.runs[0].clatMeanMs < c.modes.copy.runs[0].clatMeanMs)]] : []),
    ['clone 10 reads the same data as the origin\'s file before the writes', yes(ch.lastSameDataAsFile), 'yes', yes(ch.lastSameDataAsFile)],
    [`4k randread QD 32: clone ${ch.depth} deep / plain origin (${ch.summary.cloneIops} / ${ch.summary.originIops} IOPS)`,
      ch.summary.ratio.toFixed(2), '~1.0', yes(ch.summary.ratio >= 0.95 && ch.summary.ratio <= 1.05)],
    ['vdisk check at the end', v.checkOk ? 'consistent' : 'FAILED', 'exit 0', yes(v.checkOk)],
  ]);
}
