// The controller process: owns the Store, listens on <data dir>/controller.sock and answers management
// requests (and, with the agent work, faults). Each mutating request awaits its SQLite commit before the
// reply goes out, so an acknowledged change survives a crash of the controller.
import crypto from 'node:crypto';
import fs from 'node:fs';
import { VdiskError } from '../errors.js';
import type { Connection } from '../protocol/connection.js';
import type { Hello } from '../protocol/messages.js';
import { startServer, type ProtocolServer } from '../protocol/server.js';
import { bool, int, optInt, optStr, str } from './args.js';
import { prepareContainer } from './container-files.js';
import { socketPath } from './paths.js';
import { Store } from './store.js';

export const CONTROLLER_VERSION = '0.1.0';

type Handler = (args: Record<string, unknown>) => Promise<unknown>;

export class Controller {
  private server: ProtocolServer | undefined;
  private stopping: (() => void) | undefined;
  readonly stopped: Promise<void>;
  readonly serverId = crypto.randomUUID();

  private constructor(readonly dataDir: string, readonly store: Store) {
    this.stopped = new Promise((resolve) => { this.stopping = resolve; });
  }

  static async start(dataDir: string): Promise<Controller> {
    const store = await Store.open(dataDir);
    const c = new Controller(dataDir, store);
    try {
      c.server = await startServer(socketPath(dataDir), {
        serverId: c.serverId,
        onConnection: (conn, hello) => c.accept(conn, hello),
      });
    } catch (err) {
      await store.close();
      throw err;
    }
    return c;
  }

  async stop(): Promise<void> {
    await this.server?.close();
    this.server = undefined;
    await this.store.close();
    this.stopping?.();
  }

  private accept(conn: Connection, _hello: Hello): void {
    conn.onRequest(async (op, args) => {
      const handler = this.handlers[op];
      if (!handler) throw new VdiskError(`unknown operation ${op}`, { code: 'EUNKNOWNOP' });
      return handler(args);
    });
  }

  private readonly handlers: Record<string, Handler> = {
    'controller.status': async () => ({
      pid: process.pid, version: CONTROLLER_VERSION, dataDir: this.dataDir, serverId: this.serverId,
      disks: (await this.store.listDisks()).length, containers: (await this.store.listContainers()).length,
    }),
    'controller.stop': async () => {
      // Reply first; the listener closes right after this request's reply has gone out.
      setImmediate(() => { void this.stop(); });
      return { stopping: true };
    },
    'container.add': async (a) => {
      const name = str(a, 'name');
      const file = prepareContainer(str(a, 'path'), optInt(a, 'size'));
      return this.store.addContainer(name, file.path, file.size);
    },
    'container.ls': async () => this.store.listContainers(),
    'container.rm': async (a) => {
      await this.store.removeContainer(str(a, 'name'));
      return {};
    },
    'container.fail': async (a) => {
      const touched = await this.store.failContainer(str(a, 'name'));
      const disks = await this.store.listDisks();
      return { disks: [...touched].map(([id, entries]) => ({ disk: disks.find((d) => d.id === id)?.name, entries: entries.length })) };
    },
    'disk.create': async (a) => this.store.createDisk({
      name: str(a, 'name'), size: int(a, 'size'), segmentSize: optInt(a, 'segmentSize') ?? 1 << 20,
      container: optStr(a, 'container'), thick: bool(a, 'thick'),
    }),
    'disk.ls': async () => this.store.listDisks(),
    'disk.info': async (a) => this.store.diskInfo(str(a, 'name')),
    'disk.rm': async (a) => {
      await this.store.removeDisk(str(a, 'name'));
      return {};
    },
  };
}

/** Runs a controller in this process until SIGINT/SIGTERM or a controller.stop request. */
export async function runController(dataDir: string): Promise<void> {
  fs.mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  const c = await Controller.start(dataDir);
  const onSignal = () => { void c.stop(); };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  process.stdout.write(`vdisk controller ${process.pid} serving ${socketPath(dataDir)}\n`);
  await c.stopped;
  process.off('SIGINT', onSignal);
  process.off('SIGTERM', onSignal);
}
