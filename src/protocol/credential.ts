// A host credential: the host's private key, its certificate (the host id bound in CN and in a SAN URI) and
// the controller's CA, in one PEM file. The agent presents the key and certificate and pins the CA; the
// controller reads the host id from the verified peer certificate, never from what the peer claims.
import crypto from 'node:crypto';
import fs from 'node:fs';
import type tls from 'node:tls';
import { VdiskError } from '../errors.js';

/** The fixed identity in the controller's server certificate: agents check it, not the address they dial. */
export const SERVER_NAME = 'vdisk-controller';
/** The SAN URI that binds a host id into its certificate: vdisk:host:ID. */
export const HOST_URI_PREFIX = 'vdisk:host:';

export interface Credential { hostId: string; key: string; cert: string; ca: string }

const PEM_BLOCK = /-----BEGIN ([A-Z0-9 ]+)-----[\s\S]+?-----END \1-----/g;

function bad(source: string, why: string): VdiskError {
  return new VdiskError(`${source} is not a vdisk host credential: ${why}`, { code: 'EINVAL', path: source });
}

/** The host id a certificate binds: its CN, which must also be its one vdisk:host: SAN URI. */
export function hostIdOf(subjectCn: string | undefined, subjectAltName: string | undefined): string | undefined {
  const uris = (subjectAltName ?? '').split(',').map((s) => s.trim())
    .filter((s) => s.startsWith(`URI:${HOST_URI_PREFIX}`)).map((s) => s.slice(4 + HOST_URI_PREFIX.length));
  if (uris.length !== 1 || !subjectCn || uris[0] !== subjectCn) return undefined;
  return subjectCn;
}

/** The host id of a verified TLS peer's certificate, or undefined when it binds none. */
export function hostIdOfPeer(cert: tls.PeerCertificate): string | undefined {
  const cn = cert.subject?.CN;
  return hostIdOf(typeof cn === 'string' ? cn : undefined, cert.subjectaltname);
}

function cnOf(subject: string): string | undefined {
  return /^CN=(.*)$/m.exec(subject)?.[1];
}

/**
 * Parses a credential and checks it hangs together: one key, the host certificate it belongs to, signed by
 * the CA that comes with it. A damaged or mixed-up file is refused here, not at a handshake that says less.
 */
export function parseCredential(text: string, source = 'the credential'): Credential {
  const blocks = [...text.matchAll(PEM_BLOCK)].map((m) => ({ label: m[1], pem: `${m[0]}\n` }));
  const keys = blocks.filter((b) => b.label === 'PRIVATE KEY' || b.label === 'EC PRIVATE KEY');
  const certs = blocks.filter((b) => b.label === 'CERTIFICATE');
  if (keys.length !== 1 || certs.length !== 2) throw bad(source, `it must hold one private key and two certificates (found ${keys.length} and ${certs.length})`);
  let parsed: crypto.X509Certificate[];
  let key: crypto.KeyObject;
  try {
    parsed = certs.map((c) => new crypto.X509Certificate(c.pem));
    key = crypto.createPrivateKey(keys[0].pem);
  } catch (err) {
    throw bad(source, (err as Error).message);
  }
  const caIndex = parsed.findIndex((c) => c.ca);
  if (caIndex < 0 || parsed[1 - caIndex].ca) throw bad(source, 'it must hold the host certificate and the CA certificate');
  const [host, ca] = [parsed[1 - caIndex], parsed[caIndex]];
  if (!host.verify(ca.publicKey)) throw bad(source, 'the host certificate is not signed by the CA in the file');
  if (!host.checkPrivateKey(key)) throw bad(source, 'the private key does not belong to the host certificate');
  const hostId = hostIdOf(cnOf(host.subject), host.subjectAltName);
  if (!hostId) throw bad(source, 'the certificate binds no host id');
  return { hostId, key: keys[0].pem, cert: certs[1 - caIndex].pem, ca: certs[caIndex].pem };
}

/** The file `vdisk host add` writes: key, host certificate, CA. */
export function formatCredential(c: Omit<Credential, 'hostId'>): string {
  return `${c.key.trim()}\n${c.cert.trim()}\n${c.ca.trim()}\n`;
}

export function readCredential(file: string): Credential {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw VdiskError.from(err, `cannot read the credential ${file}`);
  }
  return parseCredential(text, file);
}
