// The controller's listening side: one Unix socket, 0600, in the data dir (a live-socket check so that two
// controllers never share it), optionally a mutual-TLS listener (tls-listener.ts), and for both the same
// hello/welcome handshake before a connection is handed over: everything above the byte stream is shared.
import fs from 'node:fs';
import net from 'node:net';
import { VdiskError } from '../errors.js';
import { Connection } from './connection.js';
import { PROTOCOL_VERSION, type Hello, type Message } from './messages.js';
import { errorCode, errorText } from './reply.js';
import { listenTls, type TlsAddress, type TlsListenOptions } from './tls-listener.js';

export const HANDSHAKE_TIMEOUT_MS = 5000;

/**
 * Who is at the other end, as the transport proves it: anyone who can open the 0600 Unix socket (the
 * controller host's administrator), or over TLS the host whose verified certificate the peer presented.
 */
export type Peer = { transport: 'unix' } | { transport: 'tls'; hostId: string };

export interface ServerOptions {
  serverId: string;
  /** Before the welcome: a rejection refuses the connection with its error (the peer's connect fails). */
  admit?(hello: Hello, peer: Peer): Promise<void>;
  /** Called after the welcome is sent; a throw or rejection closes that connection with an error frame. */
  onConnection(conn: Connection, hello: Hello, peer: Peer): void | Promise<void>;
  handshakeTimeoutMs?: number;
}

export interface ProtocolServer {
  readonly path: string;
  readonly connections: ReadonlySet<Connection>;
  /** The address of the TLS listener, once listenTls has been called. */
  readonly tlsAddress: TlsAddress | undefined;
  listenTls(o: TlsListenOptions): Promise<TlsAddress>;
  /** Closes every TLS connection whose certificate is hostId's (authenticated or still being checked). */
  closeHost(hostId: string, code: string, message: string): number;
  close(): Promise<void>;
}

/**
 * Binds a TLS peer's hello to its certificate: a TLS connection is an agent's (the administrator's CLI stays
 * on the Unix socket), and the host id is the certificate's; a hello naming another host is refused.
 */
function bindHello(hello: Hello, peer: Peer): Hello {
  if (peer.transport === 'unix') return hello;
  if (hello.role !== 'agent') {
    throw new VdiskError(`a TLS connection speaks for host ${peer.hostId}'s agent: role ${hello.role} is for the controller host's Unix socket`, { code: 'EPERM' });
  }
  if (hello.hostId !== undefined && hello.hostId !== peer.hostId) {
    throw new VdiskError(`this credential is host ${peer.hostId}'s: it cannot speak for host ${hello.hostId}`, { code: 'EACCES' });
  }
  return { ...hello, hostId: peer.hostId };
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
  /** The host of each TLS connection's certificate, from the moment its TLS handshake completed. */
  const certHosts = new Map<Connection, string>();
  let closing: Promise<void> | undefined;
  let tls: { server: net.Server; address: TlsAddress } | undefined;
  const timeoutMs = opts.handshakeTimeoutMs ?? HANDSHAKE_TIMEOUT_MS;

  const accept = (conn: Connection, msg: Message, peer: Peer): void => {
    if (closing) return void conn.close();
    if (msg.type !== 'hello') {
      return conn.fail('EPROTO', `protocol violation: the first message must be a hello, not ${msg.type}`);
    }
    if (msg.version !== PROTOCOL_VERSION) {
      return conn.fail('EVERSION',
        `the client speaks protocol version ${msg.version}, this controller speaks version ${PROTOCOL_VERSION}`);
    }
    const hello = bindHello(msg, peer);
    Promise.resolve(opts.admit?.(hello, peer))
      .then(() => {
        if (!conn.isOpen) return;
        conn.send({ type: 'welcome', version: PROTOCOL_VERSION, serverId: opts.serverId });
        return opts.onConnection(conn, hello, peer);
      })
      .catch((err: unknown) => conn.fail(errorCode(err), errorText(err)));
  };

  /**
   * Takes a connected byte stream: the peer is known once `peer` resolves (a TLS peer's credential is checked
   * against the controller's records meanwhile); its hello may arrive before and waits in the Connection.
   */
  const adopt = (socket: net.Socket, peer: Promise<Peer>, certHost?: string): void => {
    const conn = new Connection(socket);
    connections.add(conn);
    if (certHost !== undefined) certHosts.set(conn, certHost);
    void conn.closed.then(() => {
      connections.delete(conn);
      certHosts.delete(conn);
    });
    Promise.all([peer, conn.firstMessage(timeoutMs)])
      .then(([p, msg]) => accept(conn, msg, p), (err: VdiskError) => conn.fail(err.code ?? 'EFAIL', err.message))
      // Nothing thrown while accepting may reach the process as an unhandled rejection.
      .catch((err: unknown) => conn.fail(errorCode(err), errorText(err)));
  };

  server.on('connection', (socket) => adopt(socket, Promise.resolve({ transport: 'unix' })));

  return {
    path: socketPath,
    connections,
    get tlsAddress() { return tls?.address; },
    async listenTls(o: TlsListenOptions): Promise<TlsAddress> {
      if (tls) throw new VdiskError(`the controller already listens on ${tls.address.host}:${tls.address.port}`, { code: 'EEXIST' });
      if (closing) throw new VdiskError('the controller is stopping', { code: 'ESHUTDOWN' });
      tls = await listenTls(o, (socket, hostId, checked) => adopt(socket, checked.then(() => ({ transport: 'tls', hostId })), hostId), timeoutMs);
      return tls.address;
    },
    closeHost(hostId: string, code: string, message: string): number {
      let n = 0;
      for (const [conn, host] of certHosts) {
        if (host !== hostId) continue;
        conn.fail(code, message);
        n++;
      }
      return n;
    },
    close(): Promise<void> {
      closing ??= (async () => {
        // Unlink while the listener still owns the path, so a newer controller's socket is never removed.
        fs.rmSync(socketPath, { force: true });
        const stopped = [server, tls?.server].filter((s) => s !== undefined)
          .map((s) => new Promise<void>((resolve) => s.close(() => resolve())));
        await Promise.all([...connections].map((c) => c.close()));
        await Promise.all(stopped);
      })();
      return closing;
    },
  };
}
