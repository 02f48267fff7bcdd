// Connecting to the controller as an agent or the CLI: open the Unix socket, send hello, and return the
// connection only once the controller has welcomed this protocol version.
import net from 'node:net';
import { VdiskError } from '../errors.js';
import { Connection } from './connection.js';
import { parseMessage, PROTOCOL_VERSION, type Hello, type Role, type Welcome } from './messages.js';

export const CONNECT_TIMEOUT_MS = 5000;

export interface ConnectOptions { role: Role; hostId?: string; timeoutMs?: number }

function openSocket(path: string, timeoutMs: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.createConnection(path);
    let settled = false;
    const timer = setTimeout(
      () => settle(new VdiskError(`connecting to ${path} timed out`, { code: 'ETIMEDOUT', path })), timeoutMs);
    function settle(err?: VdiskError): void {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (!err) return resolve(socket);
      socket.destroy();
      reject(err);
    }
    socket.once('connect', () => settle());
    // Stays attached (a no-op once settled) so an error before the Connection listens is never unhandled.
    socket.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') {
        settle(new VdiskError(`no controller is running (no socket at ${path})`, { code: 'ENOENT', path, cause: err }));
      } else if (err.code === 'ECONNREFUSED') {
        settle(new VdiskError(`no controller is running (the socket at ${path} refuses connections)`,
          { code: 'ECONNREFUSED', path, cause: err }));
      } else {
        settle(VdiskError.from(err, `cannot connect to the controller at ${path}`));
      }
    });
  });
}

export async function connect(socketPath: string, opts: ConnectOptions): Promise<{ conn: Connection; welcome: Welcome }> {
  const hello: Hello = { type: 'hello', version: PROTOCOL_VERSION, role: opts.role };
  if (opts.hostId !== undefined) hello.hostId = opts.hostId;
  try {
    parseMessage({ ...hello });
  } catch (err) {
    throw new VdiskError(`cannot connect: ${(err as Error).message}`, { code: 'EINVAL' });
  }
  const timeoutMs = opts.timeoutMs ?? CONNECT_TIMEOUT_MS;
  const deadline = Date.now() + timeoutMs;
  const conn = new Connection(await openSocket(socketPath, timeoutMs));
  conn.send(hello);
  const first = await conn.firstMessage(Math.max(1, deadline - Date.now())).catch((err: VdiskError) => {
    conn.socket.destroy();
    throw new VdiskError(`the controller at ${socketPath} did not complete the handshake: ${err.message}`,
      { code: err.code, path: socketPath });
  });
  if (first.type === 'error') {
    conn.socket.destroy();
    throw new VdiskError(`the controller refused the connection: ${first.message}`,
      { code: first.code, path: socketPath });
  }
  if (first.type !== 'welcome') {
    conn.fail('EPROTO', `protocol violation: expected welcome, got ${first.type}`);
    throw new VdiskError(`the controller answered hello with ${first.type}`, { code: 'EPROTO', path: socketPath });
  }
  if (first.version !== PROTOCOL_VERSION) {
    const message =
      `the controller speaks protocol version ${first.version}, this client speaks version ${PROTOCOL_VERSION}`;
    conn.fail('EVERSION', message);
    throw new VdiskError(message, { code: 'EVERSION', path: socketPath });
  }
  return { conn, welcome: first };
}
