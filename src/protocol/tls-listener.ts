// The controller's TCP listener: TLS 1.3 with mutual authentication only. A peer without a certificate the
// controller's CA signed never completes the handshake (no plaintext, no anonymous agent); one with such a
// certificate is then checked against the controller's records (revocation) before its hello is answered.
import type net from 'node:net';
import tls from 'node:tls';
import { VdiskError } from '../errors.js';
import { hostIdOfPeer } from './credential.js';

export interface TlsAddress { host: string; port: number }

export interface TlsListenOptions {
  host: string;
  /** 0 picks a free port (tests). */
  port: number;
  /** The controller's server certificate and key, and the CA whose signature a peer's certificate needs. */
  key: string;
  cert: string;
  ca: string;
  /**
   * Whether this exact certificate (by SHA-256 fingerprint) is the host's live credential: rejects with
   * the reason otherwise. Runs after every handshake, so a revocation takes effect at the next one.
   */
  authenticate(hostId: string, fingerprint256: string): Promise<void>;
  /** Each TLS handshake a peer failed (plaintext, no or a foreign certificate), for the log. */
  onRefused?(err: Error, remote: string): void;
}

/** A verified TLS socket, the host id its certificate binds and the pending check of that credential. */
export type Adopt = (socket: net.Socket, hostId: string, checked: Promise<void>) => void;

export async function listenTls(o: TlsListenOptions, adopt: Adopt, handshakeTimeoutMs: number): Promise<{ server: tls.Server; address: TlsAddress }> {
  const server = tls.createServer({
    key: o.key, cert: o.cert, ca: [o.ca],
    requestCert: true, rejectUnauthorized: true,
    minVersion: 'TLSv1.3', maxVersion: 'TLSv1.3',
    handshakeTimeout: handshakeTimeoutMs,
  });
  // Answers are small frames written as they are ready: with Nagle's algorithm each waits for the ACK of the
  // last, and the peer delays its ACKs, so faults in flight together trickled out (0.36-0.41 of the Unix
  // socket's rate at 64 at a time; 1.2-1.3 without Nagle).
  server.on('connection', (socket: net.Socket) => socket.setNoDelay(true));
  server.on('tlsClientError', (err, socket) => o.onRefused?.(err, `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? '?'}`));
  server.on('secureConnection', (socket: tls.TLSSocket) => {
    const cert = socket.getPeerCertificate();
    const hostId = socket.authorized ? hostIdOfPeer(cert) : undefined;
    if (hostId === undefined) {
      // rejectUnauthorized makes this unreachable for unsigned certificates; a CA-signed one without a bound
      // host id (the controller's own server certificate, say) is no host's credential.
      const refusal = new VdiskError('the certificate presented binds no vdisk host id', { code: 'EACCES' });
      adopt(socket, '', Promise.reject(refusal));
      return;
    }
    adopt(socket, hostId, o.authenticate(hostId, cert.fingerprint256));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) => {
      reject(new VdiskError(`cannot listen on ${o.host}:${o.port}: ${err.message}`, { code: err.code ?? 'EADDRINUSE', cause: err }));
    });
    server.listen(o.port, o.host, () => resolve());
  });
  server.removeAllListeners('error');
  server.on('error', (err) => process.emitWarning(`vdisk: TLS listener ${o.host}:${o.port}: ${err.message}`));
  const addr = server.address() as net.AddressInfo;
  return { server, address: { host: addr.address, port: addr.port } };
}
