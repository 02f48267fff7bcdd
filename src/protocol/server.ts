// The controller's listening side: one Unix socket, 0600, in the data dir; a live-socket check so that two
// controllers never share it; and the hello/welcome handshake before a connection is handed over.
import fs from 'node:fs';
import net from 'node:net';
import { VdiskError } from '../errors.js';
import { Connection } from './connection.js';
import { PROTOCOL_VERSION, type Hello, type Message } from './messages.js';
import { errorCode, errorText } from './reply.js';

export const HANDSHAKE_TIMEOUT_MS = 5000;

export interface ServerOptions {
  serverId: string;
  /** Called after the welcome is sent; a throw or rejection closes that connection with an error frame. */
  onConnection(conn: Connection, hello: Hello): void | Promise<void>;
  handshakeTimeoutMs?: number;
}

export interface ProtocolServer {
  readonly path: string;
  readonly connections: ReadonlySet<Connection>;
  close(): Promise<void>;
}

function inUse(path: string): VdiskError {
  return new VdiskError(`a controller is already running on ${path}`, { code: 'EADDRINUSE', path });
}

/** Removes a socket file left by a dead controller; refuses if one answers or the path is not a socket. */
async function clearStale(path: string): Promise<void> {
  let st: fs.Stats;
  try {
    st = fs.lstatSync(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw VdiskError.from(err, `cannot check ${path}`);
  }
  if (!st.isSocket()) throw new VdiskError(`${path} exists and is not a socket`, { code: 'EEXIST', path });
  const live = await new Promise<boolean>((resolve, reject) => {
    const probe = net.createConnection(path);
    probe.once('connect', () => {
      probe.destroy();
      resolve(true);
    });
    probe.once('error', (err: NodeJS.ErrnoException) => {
      probe.destroy();
      if (err.code === 'ECONNREFUSED' || err.code === 'ENOENT') resolve(false);
      else reject(VdiskError.from(err, `cannot check ${path}`));
    });
  });
  if (live) throw inUse(path);
  fs.rmSync(path, { force: true });
}

/** Runs fn with a umask, where the process allows setting one (worker threads do not). */
function withUmask<T>(mask: number, fn: () => T): T {
  let old: number | undefined;
  try {
    old = process.umask(mask);
  } catch {
    old = undefined;
  }
  try {
    return fn();
  } finally {
    if (old !== undefined) process.umask(old);
  }
}

export async function startServer(socketPath: string, opts: ServerOptions): Promise<ProtocolServer> {
  await clearStale(socketPath);
  const server = net.createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) => {
      reject(err.code === 'EADDRINUSE' ? inUse(socketPath) : VdiskError.from(err, `cannot listen on ${socketPath}`));
    });
    // bind() happens synchronously inside listen(): the umask makes the socket 0600 from birth, so nobody
    // can connect in the moment before the chmod below (which remains for when umask is unavailable).
    withUmask(0o177, () => server.listen(socketPath, () => resolve()));
  });
  server.removeAllListeners('error');
  server.on('error', (err) => process.emitWarning(`vdisk: controller socket ${socketPath}: ${err.message}`));
  try {
    fs.chmodSync(socketPath, 0o600);
  } catch (err) {
    server.close();
    throw VdiskError.from(err, `cannot restrict ${socketPath} to its owner`);
  }

  const connections = new Set<Connection>();
  let closing: Promise<void> | undefined;
  const timeoutMs = opts.handshakeTimeoutMs ?? HANDSHAKE_TIMEOUT_MS;

  const accept = (conn: Connection, msg: Message): void => {
    if (closing) return void conn.close();
    if (msg.type !== 'hello') {
      return conn.fail('EPROTO', `protocol violation: the first message must be a hello, not ${msg.type}`);
    }
    if (msg.version !== PROTOCOL_VERSION) {
      return conn.fail('EVERSION',
        `the client speaks protocol version ${msg.version}, this controller speaks version ${PROTOCOL_VERSION}`);
    }
    conn.send({ type: 'welcome', version: PROTOCOL_VERSION, serverId: opts.serverId });
    Promise.resolve()
      .then(() => opts.onConnection(conn, msg))
      .catch((err: unknown) => conn.fail(errorCode(err), errorText(err)));
  };

  server.on('connection', (socket) => {
    const conn = new Connection(socket);
    connections.add(conn);
    void conn.closed.then(() => connections.delete(conn));
    conn.firstMessage(timeoutMs)
      .then((msg) => accept(conn, msg), (err: VdiskError) => conn.fail(err.code, err.message))
      // Nothing thrown while accepting may reach the process as an unhandled rejection.
      .catch((err: unknown) => conn.fail('EFAIL', errorText(err)));
  });

  return {
    path: socketPath,
    connections,
    close(): Promise<void> {
      closing ??= (async () => {
        // Unlink while the listener still owns the path, so a newer controller's socket is never removed.
        fs.rmSync(socketPath, { force: true });
        const stopped = new Promise<void>((resolve) => server.close(() => resolve()));
        await Promise.all([...connections].map((c) => c.close()));
        await stopped;
      })();
      return closing;
    },
  };
}
