// The controller process: owns the Store, listens on <data dir>/controller.sock (and with --listen on a
// mutual-TLS port for agents on other hosts), answers management requests from the CLI and registrations
// and map faults from agents, and issues and revokes host credentials. Each mutating request awaits its
// SQLite commit before the reply goes out, so an acknowledged change survives a crash of the controller.
import { failpoint } from '../util/failpoints.js';
import crypto from 'node:crypto';
import type http from 'node:http';
import type { AddressInfo } from 'node:net';
import { performance } from 'node:perf_hooks';
import fs from 'node:fs';
import path from 'node:path';
import { VdiskError } from '../errors.js';
import type { Connection } from '../protocol/connection.js';
import type { Hello } from '../protocol/messages.js';
import { MAX_SERVING, REQUEST_ROLES, type Op } from './roles.js';
import { startServer, type Peer, type ProtocolServer } from '../protocol/server.js';
import type { TlsAddress } from '../protocol/tls-listener.js';
import { Hosts } from './hosts.js';
import { ensureServerPki, issueHost } from './pki.js';
import { checkHostId } from '../agent/host-id.js';
import { bool, int, optInt, optStr, str } from '../protocol/args.js';
import { agentRequest, encodeAnswer, parseControllerArgs, type ControllerOps, type HandlerOut } from '../protocol/agent-ops.js';
import { LOCATION_UNIT, STATE_MASK } from '../table/mapping-table.js';
import { AgentRegistry } from './agents.js';
import { Attachments } from './attachments.js';
import { checkStore } from './check.js';
import { SegmentIo } from './segment-io.js';
import { Migrator } from './migrate.js';
import { Metrics, serveMetrics } from './metrics.js';
import { prepareContainer } from './container-files.js';
import { labelNew, refuseLabelled, wipeLabel, type Written } from './container-labels.js';
import { LABEL_RESERVED_BYTES, newUuid, readLabelAt } from '../label/container-label.js';
import { isPlainObject } from '../protocol/frame.js';
import { controllerFileOf, describeControllerFile, identify, overlaps, tryIdentify } from './container-identity.js';
import { socketPath } from './paths.js';
import { Store, type CowMode, type Modes, type PartialMode } from './store.js';
import { progressTo } from './progress.js';
import { checkName } from './names.js';
import { ensureDir } from '../util/dirs.js';

export const CONTROLLER_VERSION = '0.1.0';

interface Caller { conn: Connection; hello: Hello }
export interface ControllerOptions { listen?: { host: string; port: number } }
type Handler = (args: Record<string, unknown>, caller: Caller) => Promise<unknown>;
/** What the controller answers an agent's request (protocol/agent-ops.ts). */
type Sent<K extends keyof ControllerOps> = HandlerOut<ControllerOps[K]>;

const log = (m: string) => process.stderr.write(`${new Date().toISOString()} ${m}\n`);

function agentOf(caller: Caller): string {
  if (caller.hello.role !== 'agent' || !caller.hello.hostId) throw new VdiskError('only an agent (with a host id) may send this', { code: 'EPERM' });
  return caller.hello.hostId;
}

export class Controller {
  private server: ProtocolServer | undefined;
  private stopping: (() => void) | undefined;
  readonly stopped: Promise<void>;
  readonly serverId = crypto.randomUUID();
  readonly agents = new AgentRegistry(log);
  readonly attachments: Attachments;
  readonly io: SegmentIo;
  readonly migrator: Migrator;
  readonly metrics = new Metrics();
  readonly hosts: Hosts;
  private metricsServer: http.Server | undefined;
  /** The look for interrupted migrations at start: stop waits for it, or it would query a closed database. */
  private resumed: Promise<void> = Promise.resolve();

  private constructor(readonly dataDir: string, readonly store: Store) {
    this.hosts = new Hosts(store.db);
    this.attachments = new Attachments(store, this.agents, log);
    this.io = new SegmentIo(store);
    // New segments come from zeroed frontiers that this I/O moves ahead of need (allocator.ts): a thin fault
    // into fresh storage then costs one commit and no zeroing of its own.
    store.alloc.pool.zeroer = (container, offset, length) => this.io.zero(container, offset, length);
    store.alloc.pool.log = log;
    this.migrator = new Migrator(store, this.attachments, this.io, log);
    this.stopped = new Promise((resolve) => { this.stopping = resolve; });
  }

  static async start(dataDir: string, o: ControllerOptions = {}): Promise<Controller> {
    const store = await Store.open(dataDir);
    try {
      // How long freed segments wait before reuse (Allocator.quarantineMs). Tests set 0 to reach the reuse path.
      const quarantine = wholeFromEnv('VDISK_QUARANTINE_MS', 'milliseconds');
      if (quarantine !== undefined) store.quarantineMs = quarantine;
      // The most a sequential writer gets mapped ahead of its writes (alloc-ahead.ts); 0 turns it off.
      const ahead = wholeFromEnv('VDISK_ALLOC_AHEAD_MB', 'MiB', 1024);
      if (ahead !== undefined) store.allocAheadBytes = ahead * 1024 * 1024;
    } catch (err) {
      await store.close();
      throw err;
    }
    const c = new Controller(dataDir, store);
    c.agents.knownLeases = await store.agentLeases();
    await c.attachments.loadHolds();
    await c.recordIdentities();
    try {
      // The CA and server certificate are made on first start. Without openssl only TLS is unavailable.
      const pki = await ensureServerPki(dataDir).catch((err: Error) => {
        if (o.listen) throw err;
        log(`no TLS credentials: ${err.message}`);
        return undefined;
      });
      c.server = await startServer(socketPath(dataDir), {
        serverId: c.serverId,
        admit: (hello, peer) => c.admit(hello, peer),
        onConnection: (conn, hello) => c.accept(conn, hello),
      });
      if (o.listen && pki) {
        await c.server.listenTls({
          ...o.listen, ...pki,
          authenticate: (hostId, fingerprint) => c.hosts.authenticate(hostId, fingerprint),
          onRefused: (err, remote) => log(`TLS handshake from ${remote} refused: ${err.message}`),
        }).catch(async (err: unknown) => {
          await c.server?.close();
          throw err;
        });
      }
    } catch (err) {
      await store.close();
      throw err;
    }
    c.resumed = c.migrator.resumeAll().catch((err: Error) => { log(`resuming migrations: ${err.message}`); });
    return c;
  }

  /** Where the TLS listener listens (with --listen), for status and tests. */
  get tlsAddress(): TlsAddress | undefined {
    return this.server?.tlsAddress;
  }

  /** The open connections (CLI and agents), for tests and diagnostics. */
  get connections(): ReadonlySet<Connection> {
    return this.server?.connections ?? new Set();
  }

  /** Serves GET /metrics (Prometheus text) on host:port; port 0 picks a free one. Returns the port. */
  async startMetrics(host: string, port: number): Promise<number> {
    if (this.metricsServer) throw new VdiskError('the metrics endpoint is already being served', { code: 'EEXIST' });
    this.metricsServer = await serveMetrics(host, port, () => this.metrics.snapshot(this.store, this.agents));
    return (this.metricsServer.address() as AddressInfo).port;
  }

  async stop(): Promise<void> {
    // A scraper's keep-alive connection would hold the server (and the process) open past close().
    this.metricsServer?.closeAllConnections();
    await new Promise<void>((resolve) => { if (this.metricsServer) this.metricsServer.close(() => resolve()); else resolve(); });
    this.metricsServer = undefined;
    await this.server?.close();
    this.server = undefined;
    this.agents.stop();
    await this.resumed;
    this.io.close();
    await this.store.close();
    this.stopping?.();
  }

  /** Containers recorded before identities were get theirs now, so the store's uniqueness covers them too. */
  private async recordIdentities(): Promise<void> {
    const stored = await this.store.containerIdentities();
    for (const c of await this.store.listContainers()) {
      if (stored.get(c.id) !== null) continue;
      const id = tryIdentify(c.path);
      if (id) await this.store.setContainerIdentity(c.id, id.key).catch((err: Error) => log(`container ${c.name}: ${err.message}`));
    }
  }

  /**
   * Refuses the controller's own files as a container: thin allocations would write zeros into the database
   * (or its WAL, a log, ...). Checked before anything is created or grown, like overlaps.
   */
  private refuseControllerFile(p: string): void {
    const found = controllerFileOf(this.dataDir, p);
    if (!found) return;
    throw new VdiskError(`${p} is ${describeControllerFile(found)}: a container may not be a file of the controller's`, { code: 'EINVAL', path: p });
  }

  /** Refuses a path whose storage overlaps a container's (checked before anything is created or grown). */
  private async refuseOverlap(p: string): Promise<void> {
    const mine = tryIdentify(p);
    if (!mine) return; // nothing there yet: a new file is nobody else's
    for (const c of await this.store.listContainers()) {
      const theirs = tryIdentify(c.path);
      if (theirs && overlaps(mine, theirs)) {
        throw new VdiskError(`${p} ${mine.key === theirs.key ? 'is the same storage as' : 'overlaps'} container ${c.name} (${c.path}): ` +
          'one backing store backs at most one container', { code: 'EEXIST' });
      }
    }
  }

  /**
   * Before the welcome: a host with a credential is a remote host, whose agent proves itself with its
   * certificate. One on the Unix socket claiming its id would take over its attachments.
   */
  private async admit(hello: Hello, peer: Peer): Promise<void> {
    if (peer.transport === 'unix' && hello.role === 'agent' && hello.hostId !== undefined && await this.hosts.isRemote(hello.hostId)) {
      throw new VdiskError(`host ${hello.hostId} is a remote host (it has a credential): its agent connects over TLS with that credential`, { code: 'EACCES' });
    }
  }

  private accept(conn: Connection, hello: Hello): void {
    // The controller handles no event: each is dropped as it arrives (held, a peer's events would pin memory).
    conn.onEvent(() => undefined);
    conn.maxServing = MAX_SERVING[hello.role];
    conn.onRequest(async (op, args) => {
      // Own handlers only: "constructor" or "toString" must not reach Object.prototype's functions.
      const known = Object.hasOwn(this.handlers, op) ? op as Op : undefined;
      if (!known) throw new VdiskError(`unknown operation ${op}`, { code: 'EUNKNOWNOP' });
      const roles = REQUEST_ROLES[known];
      if (!roles.includes(hello.role)) {
        throw new VdiskError(`${op} is for ${roles.join(' and ')} connections only, not for this ${hello.role} connection`, { code: 'EPERM' });
      }
      return this.handlers[known](args, { conn, hello });
    });
  }

  /**
   * The caller's host id, for the requests of a registered agent (faults, reports, pings): a connection the
   * registry does not hold (it never sent agent.register, or another registered for its host since) has no
   * lease the controller counts on, so nothing is answered or changed for it.
   */
  private registered(caller: Caller): string {
    const hostId = agentOf(caller);
    if (this.agents.get(hostId)?.conn !== caller.conn) {
      throw new VdiskError(`host ${hostId} has not registered on this connection: send agent.register first`, { code: 'EPERM' });
    }
    return hostId;
  }

  private readonly handlers: Record<Op, Handler> = {
    'controller.status': async () => ({
      pid: process.pid, version: CONTROLLER_VERSION, dataDir: this.dataDir, serverId: this.serverId,
      disks: (await this.store.listDisks()).length, containers: (await this.store.listContainers()).length,
      ...(this.tlsAddress ? { listen: this.tlsAddress } : {}),
    }),
    'controller.backup': async (a) => this.store.backup(str(a, 'path')),
    'stats': async () => ({ ...await this.metrics.snapshot(this.store, this.agents), grants: { ...this.attachments.grants.stats } }),
    'controller.stop': async () => {
      // Reply first; the listener closes right after this request's reply has gone out.
      setImmediate(() => { void this.stop(); });
      return { stopping: true };
    },
    'container.add': async (a) => {
      const name = str(a, 'name');
      // Refused before prepareContainer touches the file (it grows an existing one to the size asked for):
      // a refused add leaves the file as it was. The store checks both again in its transaction.
      checkName('container', name);
      const known = await this.store.listContainers();
      if (known.some((c) => c.name === name)) throw new VdiskError(`container ${name} already exists`, { code: 'EEXIST' });
      this.refuseControllerFile(path.resolve(str(a, 'path')));
      await this.refuseOverlap(path.resolve(str(a, 'path')));
      const size = optInt(a, 'size');
      if (size !== undefined && size < LABEL_RESERVED_BYTES + LOCATION_UNIT) {
        throw new VdiskError(`container size ${size} leaves no room after its 1 MiB label`, { code: 'EINVAL' });
      }
      const hostPaths = hostPathsArg(a, false) as Record<string, string>;
      // Labelled storage is refused before prepareContainer grows it (labelNew checks again before writing).
      const labels = { containers: known, intents: await this.store.labelIntents() };
      const existing = await readLabelAt(path.resolve(str(a, 'path'))).catch(() => undefined);
      if (existing) refuseLabelled(path.resolve(str(a, 'path')), existing, labels);
      const file = prepareContainer(str(a, 'path'), size);
      if (file.size < LABEL_RESERVED_BYTES + LOCATION_UNIT) {
        if (file.created) fs.rmSync(file.path, { force: true });
        throw new VdiskError(`${file.path} holds ${file.size} bytes: a container needs room after its 1 MiB label`, { code: 'EINVAL' });
      }
      let c;
      let label: Written | undefined;
      const uuid = newUuid();
      try {
        // Durable on the storage before the add commits: no agent serves it without finding this label. The
        // intent first: a crash between the label and the commit leaves a label this controller knows as its own.
        await this.store.recordLabelIntent(uuid, file.path);
        label = await labelNew(file.path, uuid, name, file.size, labels);
        failpoint('container.labelled');
        c = await this.store.addContainer(name, file.path, file.size, identify(file.path).key, { uuid, hostPaths });
      } catch (err) {
        if (file.created) fs.rmSync(file.path, { force: true }); // a refused add leaves nothing it made
        else await label?.undo().catch((e: Error) => log(`container ${name}: putting back what its label replaced: ${e.message}`));
        await this.store.dropLabelIntent(uuid).catch(() => {});
        throw err;
      }
      await this.attachments.broadcastContainers();
      return c;
    },
    'container.set': async (a) => {
      const c = await this.store.setHostPaths(str(a, 'name'), hostPathsArg(a, true));
      // Each agent opens the container by its path now (label checked) and drains before closing the old fd.
      await this.attachments.broadcastContainers();
      return c;
    },
    'container.ls': async () => (await this.store.listContainers()).map((c) => ({ ...c, errors: this.attachments.health.errorsOf(c.id) })),
    'container.rm': async (a) => {
      const c = await this.store.container(str(a, 'name'));
      await this.store.removeContainer(c.name);
      // Nothing maps it any more: agents close it after draining, and so does the controller.
      this.io.forget(c.id);
      await this.attachments.broadcastContainers();
      // Only once no agent has it open: its storage may then be added again.
      const kept = await wipeLabel(c);
      if (kept) log(`container ${c.name} removed; ${kept}`);
      return {};
    },
    'container.fail': async (a) => {
      const touched = await this.store.failContainer(str(a, 'name'));
      const disks = await this.store.listDisks();
      // Committed first; then every agent mapping a touched disk installs the Error entries (blocking).
      for (const id of touched.keys()) {
        const disk = disks.find((d) => d.id === id);
        if (disk) await this.attachments.pushTable(disk);
      }
      // No agent still plans I/O with an entry naming it (the pushes were blocking): now the fds go.
      this.io.forget((await this.store.container(str(a, 'name'))).id);
      await this.attachments.broadcastContainers();
      return { disks: [...touched].map(([id, entries]) => ({ disk: disks.find((d) => d.id === id)?.name, entries: entries.length })) };
    },
    'disk.create': async (a) => this.store.createDisk({
      name: str(a, 'name'), size: int(a, 'size'), segmentSize: optInt(a, 'segmentSize') ?? 1 << 20,
      container: optStr(a, 'container'), thick: bool(a, 'thick'), ...modes(a),
      zero: (container, offset, length) => this.io.zero(container, offset, length),
    }),
    'disk.ls': async () => this.store.listDisks(),
    'disk.info': async (a) => {
      const info = await this.store.diskInfo(str(a, 'name'));
      // Containers it maps that some host holds in Error: its segments there fail with EIO on that host.
      const containerErrors = (await this.store.listContainers()).filter((c) => c.name in info.perContainer)
        .flatMap((c) => this.attachments.health.errorsOf(c.id).map((e) => ({ container: c.name, ...e })));
      return { ...info, containerErrors };
    },
    'disk.migrate': async (a, caller) => {
      let last = 0;
      return this.migrator.migrate(str(a, 'name'), str(a, 'to'), (p) => {
        // At most ~10 events a second, and always the last one.
        if (p.done === p.total || Date.now() - last >= 100) {
          last = Date.now();
          caller.conn.sendEvent('migrate.progress', p);
        }
      });
    },
    'disk.snapshot': async (a) => this.attachments.snapshot(str(a, 'name'), str(a, 'snapshot'), this.io),
    'disk.clone': async (a) => {
      const clone = await this.store.cow.clone(str(a, 'snapshot'), str(a, 'name'), modes(a));
      // Its copy-outs will move the other members' shared entries: their copy-on-write claims stop first. (A
      // controller that dies before this frees every grant anyway, at the agents' registrations.)
      if (clone.cow !== 'redirect') await this.attachments.grants.revokeFamily(clone);
      failpoint('clone.committed');
      return clone;
    },
    'disk.fold': async (a, caller) => ({
      folded: await this.attachments.foldAll(await this.store.disk(str(a, 'name')), this.io, progressTo(caller.conn, a.progress === true, 'fold', 'alternates')),
    }),
    'check': async (a, caller) => checkStore(this.store, progressTo(caller.conn, a.progress === true, 'check', 'segments')),
    'disk.attach': async (a) => {
      const hostId = str(a, 'hostId');
      // Never ENOAGENT for a remote host: that code makes the CLI start a local agent, which is no agent of it.
      if (!this.agents.get(hostId) && await this.hosts.isRemote(hostId)) {
        throw new VdiskError(`the agent of remote host ${hostId} is not connected: start it on ${hostId} ` +
          `(vdisk agent start --controller ${this.listenText()} --credential FILE)`, { code: 'EHOSTDOWN' });
      }
      return this.attachments.attach(str(a, 'name'), hostId, { queues: optInt(a, 'queues'), depth: optInt(a, 'depth') });
    },
    'disk.detach': async (a) => this.attachments.detach(str(a, 'name'), optStr(a, 'hostId'), bool(a, 'force')),
    'disk.states': async (a) => {
      const bits = int(a, 'bits');
      if (bits === 0 || (bits & ~STATE_MASK) !== 0) throw new VdiskError(`argument bits must be a non-empty set of state bits (mask ${STATE_MASK})`, { code: 'EINVAL' });
      const disk = await this.store.disk(str(a, 'name'));
      await this.attachments.changeStates(disk, int(a, 'first'), int(a, 'count'), bits, bool(a, 'set'));
      return {};
    },
    'attachment.ls': async () => this.store.attachments(),
    'agent.ls': async () => {
      const atts = await this.store.attachments();
      return this.agents.list().map((l) => ({ hostId: l.hostId, pid: l.pid, leaseMs: l.leaseMs, since: new Date(l.since).toISOString(),
        disks: atts.filter((x) => x.hostId === l.hostId).map((x) => x.disk) }));
    },
    'agent.stop': async (a) => {
      const hostId = str(a, 'hostId');
      const link = this.agents.get(hostId);
      if (!link) throw new VdiskError(`no agent for host ${hostId} is connected`, { code: 'ENOENT' });
      await agentRequest(link.conn, 'agent.exit', {});
      return { pid: link.pid };
    },
    'agent.register': async (a, caller): Promise<Sent<'agent.register'>> => {
      const hostId = agentOf(caller);
      // The lease is bounded there: blocking changes to a lost agent's disks wait it out (protocol/lease.ts).
      const { leaseMs, disks: held, pid, claims } = parseControllerArgs('agent.register', a);
      const link = { hostId, conn: caller.conn, pid, leaseMs, since: Date.now() };
      this.agents.add(link);
      await this.store.touchAgent(hostId, leaseMs);
      // Before reconciliation reloads its tables: they must show what its claims mapped.
      const claimed = await this.attachments.grants.register(hostId, claims);
      log(`agent ${hostId} (pid ${link.pid}) registered with ${held.length} disk(s)${claims.length ? `, ${claimed} of ${claims.length} claim(s) applied` : ''}`);
      // After the reply: the agent serves our commands while its registration completes.
      setImmediate(() => { void this.attachments.reconcile(link, held).catch((err: Error) => log(`reconcile ${hostId}: ${err.message}`)); });
      return { claims: claimed };
    },
    'agent.ping': async (a, caller): Promise<Sent<'agent.ping'>> => {
      const hostId = this.registered(caller);
      parseControllerArgs('agent.ping', a);
      this.agents.heardFrom(hostId, caller.conn);
      return {};
    },
    'disk.ioerror': async (a, caller): Promise<Sent<'disk.ioerror'>> => {
      const hostId = this.registered(caller);
      const { diskId, first, count } = parseControllerArgs('disk.ioerror', a);
      const disk = await this.store.diskById(diskId);
      if (!disk) throw new VdiskError(`no disk with id ${diskId}`, { code: 'ENOENT' });
      const n = await this.attachments.markIoError(disk, first, count);
      log(`agent ${hostId}: container I/O error under ${disk.name} segments ${first}+${count}: ${n} entries now Error`);
      return { entries: n };
    },
    'fault': async (a, caller): Promise<Sent<'fault'>> => {
      const hostId = this.registered(caller);
      const f = parseControllerArgs('fault', a);
      const disk = await this.store.diskById(f.diskId);
      if (!disk) throw new VdiskError(`no disk with id ${f.diskId}`, { code: 'ENOENT' });
      const started = performance.now();
      if (f.claims) await this.attachments.grants.sync(disk, hostId, f.claims);
      const answer = await this.attachments.fault(caller.conn, disk, {
        op: f.op, segment: f.segment, states: f.states, offset: f.offset, length: f.length ?? disk.segmentSize,
      }, this.io).catch((err: unknown) => {
        this.metrics.fault(f.op, performance.now() - started, true);
        throw err;
      });
      this.metrics.fault(f.op, performance.now() - started, answer.action === 'error');
      return encodeAnswer(answer); // bitmaps travel as base64 in the JSON reply
    },
    'fault.ahead': async (a, caller): Promise<Sent<'fault.ahead'>> => {
      this.registered(caller);
      const { diskId, segment, from } = parseControllerArgs('fault.ahead', a);
      const disk = await this.store.diskById(diskId);
      if (!disk) throw new VdiskError(`no disk with id ${diskId}`, { code: 'ENOENT' });
      for (const [name, v] of [['segment', segment], ['from', from]] as const) {
        if (v >= disk.segments) throw new VdiskError(`${name} ${v} is outside disk ${disk.name} (${disk.segments} segments)`, { code: 'ERANGE' });
      }
      const started = performance.now();
      const mapped = await this.attachments.faultAhead(disk, segment, from);
      this.metrics.ahead(performance.now() - started, mapped > 0);
      return { mapped };
    },
    'disk.sync': async (a, caller): Promise<Sent<'disk.sync'>> => {
      const hostId = this.registered(caller);
      const { diskId, claims } = parseControllerArgs('disk.sync', a);
      const disk = await this.store.diskById(diskId);
      if (!disk) throw new VdiskError(`no disk with id ${diskId}`, { code: 'ENOENT' });
      const started = performance.now();
      await this.attachments.grants.sync(disk, hostId, claims);
      const commits = this.store.db.lazyPending;
      await this.store.db.sync();
      failpoint('sync.committed');
      this.metrics.sync(performance.now() - started, commits > 0);
      return { commits };
    },
    'disk.grant': async (a, caller): Promise<Sent<'disk.grant'>> => {
      const hostId = this.registered(caller);
      const { diskId, want, claims } = parseControllerArgs('disk.grant', a);
      const disk = await this.store.diskById(diskId);
      if (!disk) throw new VdiskError(`no disk with id ${diskId}`, { code: 'ENOENT' });
      return this.attachments.grants.grant(disk, hostId, want, claims);
    },
    'disk.rm': async (a, caller) => {
      await this.store.removeDisk(str(a, 'name'), progressTo(caller.conn, a.progress === true, 'rm', 'segments'));
      return {};
    },
    'host.add': async (a) => {
      const hostId = str(a, 'hostId');
      checkHostId(hostId);
      await this.hosts.refuseLive(hostId);
      if (this.agents.get(hostId)) throw new VdiskError(`a local agent serves host ${hostId}: stop it first (vdisk agent stop --host-id ${hostId})`, { code: 'EBUSY' });
      // openssl runs outside any transaction; the record commits before the credential is handed out.
      const issued = await issueHost(this.dataDir, hostId);
      const rec = await this.hosts.add(hostId, { fingerprint: issued.fingerprint256, serial: issued.serial, notAfter: issued.notAfter });
      log(`host ${hostId}: credential issued (serial ${rec.serial})`);
      return { ...rec, credential: issued.credential };
    },
    'host.ls': async () => (await this.hosts.list()).map((h) => ({ ...h, connected: this.agents.get(h.hostId) !== undefined })),
    'host.rm': async (a) => {
      const hostId = str(a, 'hostId');
      const rec = await this.hosts.revoke(hostId);
      // Committed: every later handshake is refused. Now the live ones go, authenticated or not yet.
      const closed = this.server?.closeHost(hostId, 'EACCES', `the credential of host ${hostId} was revoked`) ?? 0;
      log(`host ${hostId}: credential revoked, ${closed} connection(s) closed`);
      return { ...rec, closed };
    },
  };

  private listenText(): string {
    const l = this.tlsAddress;
    return l ? `${l.host.includes(':') ? `[${l.host}]` : l.host}:${l.port}` : 'ADDR:PORT';
  }
}

/** Runs a controller in this process until SIGINT/SIGTERM or a controller.stop request. */
export async function runController(dataDir: string, o: { metrics?: { host: string; port: number } } & ControllerOptions = {}): Promise<void> {
  ensureDir(dataDir);
  const c = await Controller.start(dataDir, { listen: o.listen });
  if (o.metrics) {
    try {
      const port = await c.startMetrics(o.metrics.host, o.metrics.port);
      process.stdout.write(`vdisk controller metrics on http://${o.metrics.host}:${port}/metrics\n`);
    } catch (err) {
      await c.stop();
      throw new VdiskError(`cannot serve metrics on ${o.metrics.host}:${o.metrics.port}: ${(err as Error).message}`, { code: 'EADDRINUSE' });
    }
  }
  const onSignal = () => { void c.stop(); };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  const tls = c.tlsAddress;
  process.stdout.write(`vdisk controller ${process.pid} serving ${socketPath(dataDir)}${tls ? ` and TLS on ${tls.host}:${tls.port}` : ''}\n`);
  await c.stopped;
  process.off('SIGINT', onSignal);
  process.off('SIGTERM', onSignal);
}

/**
 * `hostPaths`: host id -> absolute path on that host (null clears it, where `clearing`). The controller cannot
 * check a path on another machine: the agent there checks the container's label before serving it.
 */
function hostPathsArg(a: Record<string, unknown>, clearing: boolean): Record<string, string | null> {
  const v = a.hostPaths ?? (clearing ? undefined : {});
  // Changing them (container set) names at least one host: nothing to change is a mistake, not a success.
  if (!isPlainObject(v) || (clearing && Object.keys(v).length === 0)) {
    throw new VdiskError('argument hostPaths must be an object of host id -> path' + (clearing ? ' naming at least one host' : ''), { code: 'EINVAL' });
  }
  for (const [host, p] of Object.entries(v)) {
    if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/.test(host)) throw new VdiskError(`host id "${host}" in hostPaths is not a host id`, { code: 'EINVAL' });
    if (p === null && clearing) continue;
    if (typeof p !== 'string' || !path.isAbsolute(p)) throw new VdiskError(`the path of host ${host} must be absolute, not ${JSON.stringify(p)}`, { code: 'EINVAL' });
  }
  return v as Record<string, string | null>;
}

/** The optional --cow / --partial choices of create and clone (the store validates them). */
function modes(a: Record<string, unknown>): Modes {
  return { cow: optStr(a, 'cow') as CowMode | undefined, partial: optStr(a, 'partial') as PartialMode | undefined };
}

/** A whole number from the environment (at most max), or undefined when unset; anything else: EINVAL. */
function wholeFromEnv(name: string, unit: string, max?: number): number | undefined {
  const v = process.env[name];
  if (v === undefined) return undefined;
  if (!/^\d+$/.test(v) || (max !== undefined && Number(v) > max)) {
    throw new VdiskError(`${name} must be a whole number of ${unit}${max === undefined ? '' : ` from 0 to ${max}`}, not "${v}"`, { code: 'EINVAL' });
  }
  return Number(v);
}
