// The controller part of `npm run bench` (run by bench-run.mjs where ublk exists), through the real CLI,
// controller and agent processes:
//  1. a 1 TiB thin disk with 1 MiB segments (1,048,576 entries): create and attach (bulk table load) times,
//     as CLI wall times (node start included), as requests timed on the controller's socket from here, and
//     with a stand-in agent in this process that loads the table but starts no device;
//  2. map faults per second: the first 4 KiB write into each of N thin segments, at QD 1 and QD 16, then the
//     controller's share alone (the same faults sent by the stand-in agent, 1, 16 and 64 at a time);
//  3. 4k randread/randwrite on a thick controller-mapped disk against `vdisk loop` over the same container file.
// hostTableBench() is the ublk-free part (1 and the controller's share of 2), which bench.mjs also runs natively
// on the host before the VM, since under TCG absolute times (node start: seconds) say little.
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { pathToFileURL } from 'node:url';

const MiB = 1 << 20;
const HOST = 'bench';
/** The stand-in agent: answers table commands, starts no device. */
export const NO_DEVICE_HOST = 'bench-nodevice';
const BIG_SIZE = 2 ** 40;
const THIN_SIZE = 2 * 1024 * MiB;
const QUEUES = 1;
const DEPTH = 128;

const ms = (t0) => Number((performance.now() - t0).toFixed(1));
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

/**
 * The CLI, requests and a stand-in agent against the controller of dataDir (started by the caller with
 * `cli('controller', 'start')`). Needs no ublk, so the table part also runs natively on a host without it.
 */
export async function session(root, dataDir) {
  const dist = (p) => import(pathToFileURL(path.join(root, 'dist', p)).href);
  const { connect } = await dist('protocol/client.js');
  const { MappingTable } = await dist('table/mapping-table.js');
  const { FAULT_WRITE } = await dist('io/translator.js');
  const main = path.join(root, 'dist', 'cli', 'main.js');
  fs.rmSync(dataDir, { recursive: true, force: true });
  const sock = path.join(dataDir, 'controller.sock');
  // A clean environment, so that nothing inherited (NODE_OPTIONS...) reaches the controller and agent daemons.
  const env = { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin', HOME: process.env.HOME ?? '/root', VDISK_DATA_DIR: dataDir };

  /** Runs the CLI to completion; resolves with its stdout and wall time (node start included). */
  function cli(...args) {
    return new Promise((resolve, reject) => {
      const t0 = performance.now();
      const p = spawn(process.execPath, [main, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      let err = '';
      p.stdout.on('data', (d) => { out += d; });
      p.stderr.on('data', (d) => { err += d; });
      p.once('error', reject);
      p.once('exit', (code) => {
        const wall = ms(t0);
        if (code === 0) resolve({ out, ms: wall });
        else reject(new Error(`vdisk ${args.join(' ')} exited ${code}: ${err.trim()}`));
      });
    });
  }
  const cliJson = async (...args) => JSON.parse((await cli(...args, '--json')).out);

  /** One request on its own connection; ms is the request alone (connecting excluded). */
  async function rpc(op, args = {}) {
    const { conn } = await connect(sock, { role: 'cli' });
    try {
      const t0 = performance.now();
      const r = await conn.request(op, args, { timeoutMs: 300_000 });
      return { result: r.result, ms: ms(t0) };
    } finally {
      await conn.close();
    }
  }

  /**
   * A stand-in agent in this process: the agent's real table code (one table per disk), but no device. With no
   * device there is no I/O in flight, so the blocking flag costs nothing: what remains is the table work.
   */
  async function standIn(hostId = NO_DEVICE_HOST) {
    const { conn } = await connect(sock, { role: 'agent', hostId });
    const marks = {};
    const tables = new Map();
    let reconciled;
    const ready = new Promise((resolve) => { reconciled = resolve; });
    conn.onRequest(async (op, args, payload) => {
      const t = performance.now();
      switch (op) {
        case 'containers.set':
          reconciled();
          return {};
        case 'table.create':
          marks.tableCreate = t;
          tables.set(args.diskId, MappingTable.create({ segments: Math.ceil(args.size / args.segmentSize), segmentSize: args.segmentSize }));
          marks.tableCreated = performance.now();
          return {};
        case 'table.set':
          marks.tableSet = t;
          tables.get(args.diskId).loadBytes(args.first, payload);
          marks.tableLoaded = performance.now();
          marks.entries = payload.byteLength / 16;
          return {};
        case 'table.alt':
          tables.get(args.diskId).alternates.set(args.slot, args.container, args.offset, payload);
          return {};
        case 'table.states':
          // A snapshot's No-write over the whole table, for instance.
          tables.get(args.diskId).changeStates(args.first, args.count, args.bits, args.set === true);
          marks.tableStates = { count: args.count, blocking: args.blocking === true, ms: Number((performance.now() - t).toFixed(2)) };
          return {};
        case 'device.start':
          marks.deviceStart = t;
          return { devId: 900_000 + args.diskId, path: '/dev/null', queues: args.queues };
        case 'device.stop':
        case 'table.delete':
          tables.delete(args.diskId);
          return {};
        default:
          throw Object.assign(new Error(`the bench's stand-in agent does not do ${op}`), { code: 'EUNKNOWNOP' });
      }
    });
    await conn.request('agent.register', { pid: process.pid, leaseMs: 10_000, disks: [] });
    await ready; // the controller reconciles a new agent right after registering it
    return { conn, marks, tables };
  }

  /**
   * Attach through a stand-in agent in this process: the controller's whole attach flow (attachment records,
   * containers, table create, bulk table.set) with the agent's real table code, but START_DEV replaced by an
   * immediate answer. What remains is the table part of attach, without node start and device start.
   */
  async function attachWithoutDevice(name) {
    const { conn, marks } = await standIn();
    try {
      const t0 = performance.now();
      const r = await rpc('disk.attach', { name, hostId: NO_DEVICE_HOST, queues: QUEUES, depth: DEPTH });
      const total = ms(t0);
      await rpc('disk.detach', { name, hostId: NO_DEVICE_HOST, force: false });
      const rel = (t) => Number((t - t0).toFixed(1));
      return {
        ms: r.ms, msWithConnect: total, entries: marks.entries,
        // Offsets from sending disk.attach, and the stand-in agent's own work.
        tableCreateAtMs: rel(marks.tableCreate), tableCreateMs: Number((marks.tableCreated - marks.tableCreate).toFixed(1)),
        tableSetAtMs: rel(marks.tableSet), tableLoadMs: Number((marks.tableLoaded - marks.tableSet).toFixed(1)),
        deviceStartAtMs: rel(marks.deviceStart),
      };
    } finally {
      await conn.close();
    }
  }

  /**
   * The controller's side of N map faults, sent by the stand-in agent `concurrency` at a time as first writes
   * to distinct Zero segments from `first` on: allocation, zeroing + fdatasync of the segment, SQLite commit.
   */
  async function faultsWithoutDevice(disk, first, count, concurrency) {
    const { conn } = await standIn();
    try {
      const { id } = (await rpc('disk.info', { name: disk })).result;
      let next = first;
      const t0 = performance.now();
      await Promise.all(Array.from({ length: concurrency }, async () => {
        while (next < first + count) {
          const segment = next++;
          const r = await conn.request('fault', { diskId: id, op: FAULT_WRITE, segment, states: 4 }, { timeoutMs: 0 });
          if (r.result?.action !== 'entry') throw new Error(`fault on segment ${segment}: ${JSON.stringify(r.result)}`);
        }
      }));
      const elapsed = performance.now() - t0;
      return { concurrency, faults: count, elapsedMs: Number(elapsed.toFixed(1)), faultsPerSec: Math.round(count / (elapsed / 1000)) };
    } finally {
      await conn.close();
    }
  }

  return { main, env, cli, cliJson, rpc, standIn, attachWithoutDevice, faultsWithoutDevice };
}

/**
 * o: { root, dir, file (the 1 GiB backing file, already full of data), runtime, rounds, faults, fio(dev, rw),
 * sh(cmd, args), log(msg) }. Returns the report's `controller` section.
 */
export async function controllerBench(o) {
  const dataDir = path.join(o.dir, 'bench-vdisk-data');
  const { main, env, cli, cliJson, rpc, attachWithoutDevice, faultsWithoutDevice } = await session(o.root, dataDir);

  /** `vdisk loop FILE` with the attach defaults; resolves once the device is live. */
  async function startLoop(file) {
    const proc = spawn(process.execPath, [main, 'loop', file, '--queues', String(QUEUES), '--depth', String(DEPTH), '--json'],
      { env, stdio: ['ignore', 'pipe', 'inherit'] });
    const line = await new Promise((resolve, reject) => {
      let out = '';
      proc.stdout.on('data', (d) => { out += d; if (out.includes('\n')) resolve(out.split('\n')[0]); });
      proc.once('exit', (c) => reject(new Error(`vdisk loop exited ${c}`)));
    });
    const info = JSON.parse(line);
    return { dev: info.device, info, stop: () => new Promise((r) => { proc.once('exit', r); proc.kill('SIGTERM'); }) };
  }

  /** Compares a few 4 KiB blocks read through the device with the container file at the same offsets. */
  /** Whether the device reads what the file holds after its label's MiB (segment i is the file's MiB i + 1). */
  function sameData(dev, file, size) {
    const offsets = [0, 513 * MiB + 4096, size - 4096];
    const a = Buffer.alloc(4096);
    const b = Buffer.alloc(4096);
    const fa = fs.openSync(dev, 'r');
    const fb = fs.openSync(file, 'r');
    try {
      return offsets.every((off) => {
        fs.readSync(fa, a, 0, 4096, off);
        fs.readSync(fb, b, 0, 4096, off + MiB);
        return a.equals(b);
      });
    } finally {
      fs.closeSync(fa);
      fs.closeSync(fb);
    }
  }

  const out = { dataDir, fsType: fsType(o.dir), inVm: process.env.VDISK_IN_VM === '1', host: HOST, queues: QUEUES, depth: DEPTH };
  const attached = new Set();
  let agentStarted = false;
  await cli('controller', 'start');
  try {
    // CLI start-up: a request that does nothing, so the reader can subtract node's start from the CLI wall times.
    const status = [];
    for (let i = 0; i < 3; i++) status.push((await cli('controller', 'status', '--json')).ms);
    out.cliStartupMs = { median: median(status), runs: status };

    // ---- 1. a 1 TiB thin disk: create, attach (bulk load), detach, rm
    o.log('controller: 1 TiB thin disk (1,048,576 entries): create and attach');
    await cli('container', 'add', 'big', '--path', path.join(o.dir, 'bench-big.img'), '--size', '2G');
    const big = { size: BIG_SIZE, segmentSize: MiB, entries: BIG_SIZE / MiB };
    big.createCliMs = (await cli('create', 'big1', '--size', '1T', '--segment-size', '1M', '--container', 'big')).ms;
    big.createRequestMs = (await rpc('disk.create', { name: 'big2', size: BIG_SIZE, segmentSize: MiB, container: 'big', thick: false })).ms;
    big.attachWithoutDevice = await attachWithoutDevice('big1');
    big.agentStartCliMs = (await cli('agent', 'start', '--host-id', HOST)).ms;
    agentStarted = true;
    {
      const t0 = performance.now();
      const r = await cliJson('attach', 'big1', '--host-id', HOST, '--queues', String(QUEUES), '--depth', String(DEPTH));
      big.attachCliMs = ms(t0);
      attached.add('big1');
      big.device = r.device;
    }
    big.detachCliMs = (await cli('detach', 'big1')).ms;
    attached.delete('big1');
    // The same attach as one request on the controller's socket: no node start, device start included.
    big.attachRequestMs = (await rpc('disk.attach', { name: 'big2', hostId: HOST, queues: QUEUES, depth: DEPTH })).ms;
    attached.add('big2');
    big.detachRequestMs = (await rpc('disk.detach', { name: 'big2', hostId: HOST, force: false })).ms;
    attached.delete('big2');
    big.deviceStartEstimateMs = Number((big.attachRequestMs - big.attachWithoutDevice.ms).toFixed(1));
    big.rmCliMs = (await cli('rm', 'big1')).ms;
    big.rmRequestMs = (await rpc('disk.rm', { name: 'big2' })).ms;
    out.bigThinDisk = big;
    o.log(`controller: create ${big.createCliMs} ms CLI / ${big.createRequestMs} ms request; attach ${big.attachCliMs} ms CLI / ` +
      `${big.attachRequestMs} ms request / ${big.attachWithoutDevice.ms} ms without device start; CLI start ${out.cliStartupMs.median} ms`);

    // ---- 2. map faults: the first write into each of N thin segments
    o.log(`controller: map faults, ${o.faults} segments at QD 1 and at QD 16`);
    await cli('container', 'add', 'thin', '--path', path.join(o.dir, 'bench-thin.img'), '--size', String(THIN_SIZE));
    await cli('create', 'faults', '--size', String(THIN_SIZE), '--segment-size', '1M', '--container', 'thin');
    const dev = (await cliJson('attach', 'faults', '--host-id', HOST, '--queues', String(QUEUES), '--depth', String(DEPTH))).device;
    attached.add('faults');
    const faults = { segments: o.faults, segmentSize: MiB, runs: [] };
    let expected = 0;
    for (const [i, qd] of [1, 16].entries()) {
      const fioOut = o.sh('fio', ['--name=faults', `--filename=${dev}`, '--rw=write:1020k', '--bs=4k', `--offset=${i * o.faults}M`,
        `--size=${o.faults}M`, `--number_ios=${o.faults}`, `--iodepth=${qd}`, '--numjobs=1', '--ioengine=libaio', '--direct=1',
        '--output-format=json']);
      const w = JSON.parse(fioOut.slice(fioOut.indexOf('{'))).jobs[0].write;
      expected += o.faults * MiB;
      const info = await cliJson('info', 'faults');
      const run = {
        iodepth: qd, ios: w.total_ios, elapsedMs: w.runtime, faultsPerSec: Math.round(w.total_ios / (w.runtime / 1000)),
        clatMeanMs: Number((w.clat_ns.mean / 1e6).toFixed(2)), clatP99Ms: Number((w.clat_ns.percentile['99.000000'] / 1e6).toFixed(2)),
        allocatedBytes: info.allocatedBytes, expectedBytes: expected, allocatedOk: info.allocatedBytes === expected && w.total_ios === o.faults,
      };
      faults.runs.push(run);
      o.log(`controller: faults at QD ${qd}: ${run.ios} in ${run.elapsedMs} ms = ${run.faultsPerSec}/s; ` +
        `allocated ${info.allocatedBytes / MiB} MiB (expected ${expected / MiB})`);
    }
    // First writes at streaming size: 1 MiB sequential writes at QD 16 into fresh thin segments (one fault
    // each), then the same range again, now allocated: the same run's ratio (issue target >= 0.80).
    const seqOffset = 2 * o.faults; // MiB, past the fault runs above
    const seq = (label) => {
      const fioOut = o.sh('fio', [`--name=${label}`, `--filename=${dev}`, '--rw=write', '--bs=1M', `--offset=${seqOffset}M`, '--size=256M',
        '--iodepth=16', '--numjobs=1', '--ioengine=libaio', '--direct=1', '--output-format=json']);
      const w = JSON.parse(fioOut.slice(fioOut.indexOf('{'))).jobs[0].write;
      return { mbPerSec: Number((w.bw_bytes / MiB).toFixed(1)), elapsedMs: w.runtime };
    };
    const fresh = seq('fresh');
    const again = seq('allocated');
    faults.sequential = { fresh, allocated: again, ratio: Number((fresh.mbPerSec / again.mbPerSec).toFixed(2)) };
    o.log(`controller: 1 MiB sequential writes, fresh thin ${fresh.mbPerSec} MB/s, allocated ${again.mbPerSec} MB/s, ratio ${faults.sequential.ratio}`);
    await cli('detach', 'faults');
    attached.delete('faults');
    // The controller's share: the same faults sent straight from a stand-in agent, no device or data path.
    faults.controllerOnly = [];
    for (const [i, c] of [1, 16, 64].entries()) faults.controllerOnly.push(await faultsWithoutDevice('faults', 256 + (2 + i) * o.faults, o.faults, c));
    await cli('rm', 'faults');
    out.mapFaults = faults;

    // ---- 3. a thick controller-mapped disk against `vdisk loop` on the same container file
    o.log('controller: 4k randread/randwrite, thick mapped disk vs vdisk loop on its container file');
    // The bench file is already full of random data; thick allocation starts after the container's label
    // (its first MiB), so the mapped disk's segment i is the file's MiB i + 1 (`vdisk loop` serves it from 0).
    const size = fs.statSync(o.file).size - MiB;
    await cli('container', 'add', 'thick', '--path', o.file);
    await cli('create', 'mapped', '--size', String(size), '--segment-size', '1M', '--container', 'thick', '--thick');
    const minfo = await cliJson('info', 'mapped');
    const mapped = await cliJson('attach', 'mapped', '--host-id', HOST, '--queues', String(QUEUES), '--depth', String(DEPTH));
    attached.add('mapped');
    const cmp = {
      size, allocatedBytes: minfo.allocatedBytes, perContainer: minfo.perContainer, mappedQueues: mapped.queues,
      sameDataAsFile: sameData(mapped.device, o.file, size), runs: { mapped: { randread: [], randwrite: [] }, loop: { randread: [], randwrite: [] } },
    };
    for (let round = 0; round < o.rounds; round++) {
      for (const rw of ['randread', 'randwrite']) {
        // Alternate which goes first, so drift within a round hits both alike.
        const order = round % 2 === 0 ? ['mapped', 'loop'] : ['loop', 'mapped'];
        for (const which of order) {
          if (which === 'mapped') {
            cmp.runs.mapped[rw].push(o.fio(mapped.device, rw));
          } else {
            const l = await startLoop(o.file);
            cmp.loopInfo = { queues: l.info.queues, depth: l.info.depth, segmentSize: l.info.segmentSize, direct: l.info.direct };
            try {
              cmp.runs.loop[rw].push(o.fio(l.dev, rw));
            } finally {
              await l.stop();
            }
          }
        }
        o.log(`controller: round ${round + 1} ${rw}: mapped ${cmp.runs.mapped[rw].at(-1).iops.toFixed(0)} IOPS, ` +
          `vdisk loop ${cmp.runs.loop[rw].at(-1).iops.toFixed(0)} IOPS`);
      }
    }
    await cli('detach', 'mapped');
    attached.delete('mapped');
    await cli('rm', 'mapped');
    await cli('container', 'rm', 'thick'); // wipes its label: the next bench adds the file again
    const mean = (xs) => xs.reduce((a, b) => a + b, 0) / xs.length;
    cmp.summary = {};
    for (const rw of ['randread', 'randwrite']) {
      const m = mean(cmp.runs.mapped[rw].map((r) => r.iops));
      const l = mean(cmp.runs.loop[rw].map((r) => r.iops));
      cmp.summary[rw] = { mappedIops: Math.round(m), loopIops: Math.round(l), ratio: Number((m / l).toFixed(3)) };
    }
    out.mappedVsLoop = cmp;
  } finally {
    for (const name of attached) await cli('detach', name).catch((e) => o.log(`cleanup: ${e.message}`));
    if (agentStarted) await cli('agent', 'stop', '--host-id', HOST).catch((e) => o.log(`cleanup: ${e.message}`));
    await cli('controller', 'stop').catch((e) => o.log(`cleanup: ${e.message}`));
    for (const f of ['bench-big.img', 'bench-thin.img']) fs.rmSync(path.join(o.dir, f), { force: true });
  }
  return out;
}

/**
 * The part that needs no ublk, run natively on the host before the VM (the TCG VM makes absolute times
 * meaningless): the 1 TiB thin disk's create and its attach without device start, and the controller's side
 * of map faults. o: { root, faults, log }.
 */
export async function hostTableBench(o) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vdisk-bench-'));
  const dataDir = path.join(dir, 'data');
  const { cli, cliJson, rpc, attachWithoutDevice, faultsWithoutDevice } = await session(o.root, dataDir);
  const out = { dir, fsType: fsType(dir) };
  await cli('controller', 'start');
  try {
    const status = [];
    for (let i = 0; i < 3; i++) status.push((await cli('controller', 'status', '--json')).ms);
    out.cliStartupMs = { median: median(status), runs: status };
    await cli('container', 'add', 'big', '--path', path.join(dir, 'big.img'), '--size', '2G');
    out.createCliMs = (await cli('create', 'big1', '--size', '1T', '--segment-size', '1M', '--container', 'big')).ms;
    out.createRequestMs = (await rpc('disk.create', { name: 'big2', size: BIG_SIZE, segmentSize: MiB, container: 'big', thick: false })).ms;
    const runs = [];
    for (let i = 0; i < 3; i++) runs.push(await attachWithoutDevice('big1'));
    out.attachWithoutDevice = { ...[...runs].sort((a, b) => a.ms - b.ms)[1], runsMs: runs.map((r) => r.ms) };
    out.rmRequestMs = (await rpc('disk.rm', { name: 'big2' })).ms;
    await cli('rm', 'big1');
    await cli('container', 'add', 'thin', '--path', path.join(dir, 'thin.img'), '--size', String(THIN_SIZE));
    await cli('create', 'faults', '--size', String(THIN_SIZE), '--segment-size', '1M', '--container', 'thin');
    out.faults = [];
    for (const [i, c] of [1, 16, 64].entries()) out.faults.push(await faultsWithoutDevice('faults', i * o.faults, o.faults, c));
    const info = await cliJson('info', 'faults');
    out.faultsAllocatedOk = info.allocatedBytes === 3 * o.faults * MiB;
    await cli('rm', 'faults');
    o.log(`host: attach without device start ${out.attachWithoutDevice.ms} ms (median of 3), create ${out.createRequestMs} ms request; ` +
      `controller-side faults ${out.faults.map((f) => `${f.faultsPerSec}/s at ${f.concurrency}`).join(', ')}`);
  } finally {
    await cli('controller', 'stop').catch((e) => o.log(`cleanup: ${e.message}`));
    fs.rmSync(dir, { recursive: true, force: true });
  }
  return out;
}

function fsType(dir) {
  const r = spawnSync('stat', ['-f', '-c', '%T', dir], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : 'unknown';
}

/** The host rows of the printed table. */
export function printHost(h) {
  const s = (x) => `${(x / 1000).toFixed(3)} s`;
  const met = h.attachWithoutDevice.ms < 500;
  const rows = [
    ['CLI start-up (vdisk controller status, median of 3)', s(h.cliStartupMs.median), '', ''],
    ['1 TiB thin create, CLI wall (node start included)', s(h.createCliMs), '', ''],
    ['1 TiB thin create, request on the socket', s(h.createRequestMs), '', ''],
    ['1 TiB attach, request without device start (median)', s(h.attachWithoutDevice.ms), '< 0.5 s', met ? 'yes' : 'NO'],
    ['  of which the agent creating its all-Invalid table', s(h.attachWithoutDevice.tableCreateMs), '', ''],
    ['  of which the agent loading 1,048,576 entries', s(h.attachWithoutDevice.tableLoadMs), '', ''],
    ...h.faults.map((f) => [`controller-side map faults, ${f.concurrency} at a time (${f.faults})`, `${f.faultsPerSec} /s`, '-',
      h.faultsAllocatedOk ? '(alloc ok)' : 'ALLOC WRONG']),
  ];
  table(`host, natively (no ublk needed; ${h.fsType})`, rows);
}

function table(title, rows) {
  const w = Math.max(title.length, ...rows.map((r) => r[0].length));
  console.log(`\n${title.padEnd(w)}  ${'value'.padStart(10)}   target    met`);
  for (const r of rows) console.log(`${r[0].padEnd(w)}  ${r[1].padStart(10)}   ${r[2].padEnd(8)}  ${r[3]}`);
}

/** The controller rows of the printed table. */
export function printController(c) {
  const s = (x) => `${(x / 1000).toFixed(3)} s`;
  const rows = [];
  const b = c.bigThinDisk;
  rows.push(['CLI start-up (vdisk controller status, median of 3)', s(c.cliStartupMs.median), '', '']);
  rows.push(['1 TiB thin create, CLI wall (node start included)', s(b.createCliMs), '', '']);
  rows.push(['1 TiB thin create, request on the socket', s(b.createRequestMs), '', '']);
  rows.push(['1 TiB attach, CLI wall (node + device start incl.)', s(b.attachCliMs), '', '']);
  rows.push(['1 TiB attach, request (device start included)', s(b.attachRequestMs), '', '']);
  const met = b.attachWithoutDevice.ms < 500;
  rows.push(['1 TiB attach, request without device start', s(b.attachWithoutDevice.ms), '< 0.5 s', met ? 'yes' : 'NO']);
  rows.push(['  of which the agent creating its all-Invalid table', s(b.attachWithoutDevice.tableCreateMs), '', '']);
  rows.push(['  of which the agent loading 1,048,576 entries', s(b.attachWithoutDevice.tableLoadMs), '', '']);
  for (const r of c.mapFaults.runs) {
    rows.push([`map faults, first 4k writes, QD ${r.iodepth} (${r.ios} segments)`, `${r.faultsPerSec} /s`, '-', r.allocatedOk ? '(alloc ok)' : 'ALLOC WRONG']);
  }
  const q = c.mapFaults.sequential;
  if (q) rows.push(['1 MiB seq writes QD 16, fresh thin / allocated', `${q.fresh.mbPerSec} / ${q.allocated.mbPerSec} MB/s = ${q.ratio}`, '>= 0.80', q.ratio >= 0.8 ? 'yes' : 'NO']);
  for (const f of c.mapFaults.controllerOnly ?? []) {
    rows.push([`  controller side only, ${f.concurrency} at a time (${f.faults})`, `${f.faultsPerSec} /s`, '-', '']);
  }
  table(`controller (in the ${c.inVm ? 'VM' : 'native run'})`, rows);
  const m = c.mappedVsLoop;
  console.log(`\nworkload    mapped disk IOPS   vdisk loop IOPS   ratio   target   met   (thick, ${m.mappedQueues} queue x ${c.depth}, same file${m.sameDataAsFile ? '' : ', DATA DIFFERS'})`);
  for (const rw of ['randread', 'randwrite']) {
    const x = m.summary[rw];
    console.log(`${rw.padEnd(10)}  ${String(x.mappedIops).padStart(16)}   ${String(x.loopIops).padStart(15)}   ${x.ratio.toFixed(2).padStart(5)}   >= 0.95   ${x.ratio >= 0.95 ? 'yes' : 'NO'}`);
  }
}
