// Connecting to the controller as an agent or the CLI: open the Unix socket (or, from another host, a TLS
// connection with the host's credential, pinning the controller's CA), send hello, and return the connection
// only once the controller has welcomed this protocol version.
import net from 'node:net';
import tls from 'node:tls';
import { VdiskError } from '../errors.js';
import { Connection } from './connection.js';
import { SERVER_NAME, type Credential } from './credential.js';
import { parseMessage, PROTOCOL_VERSION, type Hello, type Role, type Welcome } from './messages.js';

export const CONNECT_TIMEOUT_MS = 5000;

export interface ConnectOptions { role: Role; hostId?: string; timeoutMs?: number }

/** The controller at ADDR:PORT over mutual TLS, with this host's credential. */
export interface TlsEndpoint { host: string; port: number; credential: Credential }
/** Where the controller is: the path of its Unix socket, or a TLS endpoint. */
export type Endpoint = string | TlsEndpoint;

export function describeEndpoint(e: Endpoint): string {
  return typeof e === 'string' ? e : `${e.host.includes(':') ? `[${e.host}]` : e.host}:${e.port}`;
}

function openSocket(endpoint: Endpoint, timeoutMs: number): Promise<net.Socket> {
  const path = describeEndpoint(endpoint);
  const tlsEnd = typeof endpoint === 'string' ? undefined : endpoint;
  return new Promise((resolve, reject) => {
    // The server certificate is checked against the CA in the credential and the fixed SERVER_NAME, whatever
    // address was dialled (often an IP): verification stays on, the name is the controller's role.
    const socket = tlsEnd
      ? tls.connect({
        host: tlsEnd.host, port: tlsEnd.port, servername: SERVER_NAME,
        key: tlsEnd.credential.key, cert: tlsEnd.credential.cert, ca: [tlsEnd.credential.ca],
        minVersion: 'TLSv1.3', maxVersion: 'TLSv1.3',
      })
      : net.createConnection(endpoint as string);
    // No Nagle on TCP: requests in flight together are small frames, each sent as it is made (see tls-listener.ts).
    if (tlsEnd) socket.setNoDelay(true);
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
    socket.once(tlsEnd ? 'secureConnect' : 'connect', () => settle());
    // Stays attached (a no-op once settled) so an error before the Connection listens is never unhandled.
    socket.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') {
        settle(new VdiskError(`no controller is running (no socket at ${path})`, { code: 'ENOENT', path, cause: err }));
      } else if (err.code === 'ECONNREFUSED') {
        settle(new VdiskError(`no controller is running (${tlsEnd ? `nothing listens on ${path}` : `the socket at ${path} refuses connections`})`,
          { code: 'ECONNREFUSED', path, cause: err }));
      } else if (tlsEnd && !err.syscall) {
        // A TLS failure: the controller's certificate is not the pinned CA's, or it refused ours.
        settle(new VdiskError(`the TLS handshake with the controller at ${path} failed: ${err.message}`,
          { code: 'EACCES', path, cause: err }));
      } else {
        settle(VdiskError.from(err, `cannot connect to the controller at ${path}`));
      }
    });
  });
}

export async function connect(endpoint: Endpoint, opts: ConnectOptions): Promise<{ conn: Connection; welcome: Welcome }> {
  const socketPath = describeEndpoint(endpoint);
  const hello: Hello = { type: 'hello', version: PROTOCOL_VERSION, role: opts.role };
  if (opts.hostId !== undefined) hello.hostId = opts.hostId;
  try {
    parseMessage({ ...hello });
  } catch (err) {
    throw new VdiskError(`cannot connect: ${(err as Error).message}`, { code: 'EINVAL' });
  }
  const timeoutMs = opts.timeoutMs ?? CONNECT_TIMEOUT_MS;
  const socket = await openSocket(endpoint, timeoutMs);
  // The welcome gets a budget of its own once the stream is open: a TLS handshake under load (seen in the
  // emulated test VM) could use up a shared deadline and leave 1 ms for the controller's answer, so an agent
  // retried forever without ever being welcomed.
  const deadline = Date.now() + timeoutMs;
  // Under TLS 1.3 the controller judges our certificate after our side has finished: its refusal is an
  // alert that arrives as a socket error while we wait for the welcome.
  let socketError: Error | undefined;
  socket.on('error', (err) => { socketError ??= err; });
  const conn = new Connection(socket);
  conn.send(hello);
  const first = await conn.firstMessage(Math.max(1, deadline - Date.now())).catch((err: VdiskError) => {
    conn.socket.destroy();
    const overTls = typeof endpoint !== 'string';
    // A TLS alert names the refusal (no certificate, say). A certificate the controller cannot verify gets a
    // bare close from Node's TLS server: said so, but not EACCES (an agent gives up on EACCES, and a close
    // can also be a controller that is stopping).
    const why = overTls && socketError ? `TLS: ${socketError.message}`
      : overTls && err.code === 'ECONNRESET' ? 'it closed the TLS connection before answering: it did not accept this host\'s certificate, or it is stopping'
        : err.message;
    throw new VdiskError(`the controller at ${socketPath} did not complete the handshake: ${why}`,
      { code: overTls && socketError ? 'EACCES' : err.code, path: socketPath });
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
