// The controller's certificates, made with the `openssl` command (Node's crypto verifies X.509 but cannot
// issue it): a CA and the server certificate in the data dir (0600), created on first start, and one
// certificate per host credential. openssl runs asynchronously (execFile), never on the event loop.
import crypto from 'node:crypto';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { VdiskError } from '../errors.js';
import { formatCredential, HOST_URI_PREFIX, SERVER_NAME } from '../protocol/credential.js';
import { checkHostId } from '../agent/host-id.js';

export const CA_KEY = 'controller.ca.key';
export const CA_CERT = 'controller.ca.crt';
export const SERVER_KEY = 'controller.tls.key';
export const SERVER_CERT = 'controller.tls.crt';

const CA_DAYS = 7300;
const CERT_DAYS = 3650;
const OPENSSL_TIMEOUT_MS = 30_000;

export interface ServerPki { key: string; cert: string; ca: string }
export interface IssuedHost { credential: string; fingerprint256: string; serial: string; notAfter: string }

const EXTENSIONS = {
  ca: ['basicConstraints = critical, CA:TRUE, pathlen:0', 'keyUsage = critical, keyCertSign, cRLSign', 'subjectKeyIdentifier = hash'],
  server: ['basicConstraints = critical, CA:FALSE', 'keyUsage = critical, digitalSignature', 'extendedKeyUsage = serverAuth',
    `subjectAltName = DNS:${SERVER_NAME}`, 'authorityKeyIdentifier = keyid'],
  host: (hostId: string) => ['basicConstraints = critical, CA:FALSE', 'keyUsage = critical, digitalSignature', 'extendedKeyUsage = clientAuth',
    `subjectAltName = URI:${HOST_URI_PREFIX}${hostId}`, 'authorityKeyIdentifier = keyid'],
};

function openssl(args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile('openssl', args, { timeout: OPENSSL_TIMEOUT_MS }, (err, _stdout, stderr) => {
      if (!err) return resolve();
      const missing = (err as NodeJS.ErrnoException).code === 'ENOENT';
      reject(new VdiskError(missing
        ? 'the openssl command is needed to issue certificates and was not found: install openssl (apt-get install openssl)'
        : `openssl ${args[0]} failed: ${String(stderr).trim().split('\n').slice(-1)[0] || err.message}`, { code: missing ? 'ENOENT' : 'EFAIL', cause: err }));
    });
  });
}

/** A random positive 128-bit serial, as openssl's -set_serial takes it. */
function serial(): string {
  const b = crypto.randomBytes(16);
  b[0] &= 0x7f;
  return `0x${b.toString('hex')}`;
}

/**
 * One self-contained openssl req run in a private scratch directory: a new P-256 key and its certificate,
 * self-signed (the CA) or signed by the CA. The config is ours alone, so the system's openssl.cnf adds nothing.
 */
async function makeCert(cn: string, ext: string[], days: number, signer?: { key: string; cert: string }): Promise<{ key: string; cert: string; serial: string }> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vdisk-pki-'));
  try {
    const cnf = path.join(dir, 'req.cnf');
    fs.writeFileSync(cnf, ['[req]', 'distinguished_name = dn', 'prompt = no', '[dn]', `CN = ${cn}`, '[ext]', ...ext, ''].join('\n'), { mode: 0o600 });
    const s = serial();
    const args = ['req', '-x509', '-config', cnf, '-extensions', 'ext', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256',
      '-nodes', '-keyout', path.join(dir, 'key.pem'), '-out', path.join(dir, 'cert.pem'), '-days', String(days), '-set_serial', s];
    if (signer) {
      fs.writeFileSync(path.join(dir, 'ca.key'), signer.key, { mode: 0o600 });
      fs.writeFileSync(path.join(dir, 'ca.crt'), signer.cert, { mode: 0o600 });
      args.push('-CA', path.join(dir, 'ca.crt'), '-CAkey', path.join(dir, 'ca.key'));
    }
    await openssl(args);
    return { key: fs.readFileSync(path.join(dir, 'key.pem'), 'utf8'), cert: fs.readFileSync(path.join(dir, 'cert.pem'), 'utf8'), serial: s };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** Writes a file 0600 through a temporary name, so a crash never leaves half a key or certificate. */
function writePrivate(file: string, text: string): void {
  const tmp = `${file}.tmp-${process.pid}`;
  fs.writeFileSync(tmp, text, { mode: 0o600 });
  fs.chmodSync(tmp, 0o600);
  fs.renameSync(tmp, file);
}

function readIf(file: string): string | undefined {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw VdiskError.from(err, `cannot read ${file}`);
  }
}

/**
 * The CA and server certificate of this data dir, made the first time. The CA certificate is written last:
 * present, it has its key; absent, both are made anew (no credential can have been issued without it).
 */
export async function ensureServerPki(dataDir: string): Promise<ServerPki> {
  const at = (f: string) => path.join(dataDir, f);
  let ca = readIf(at(CA_CERT));
  let caKey = readIf(at(CA_KEY));
  if (ca === undefined || caKey === undefined) {
    const made = await makeCert(`vdisk controller CA ${crypto.randomUUID()}`, EXTENSIONS.ca, CA_DAYS);
    writePrivate(at(CA_KEY), made.key);
    writePrivate(at(CA_CERT), made.cert);
    [ca, caKey] = [made.cert, made.key];
    fs.rmSync(at(SERVER_CERT), { force: true }); // signed by a CA that is gone
  }
  let cert = readIf(at(SERVER_CERT));
  let key = readIf(at(SERVER_KEY));
  if (cert === undefined || key === undefined) {
    const made = await makeCert(SERVER_NAME, EXTENSIONS.server, CA_DAYS, { key: caKey, cert: ca });
    writePrivate(at(SERVER_KEY), made.key);
    writePrivate(at(SERVER_CERT), made.cert);
    [cert, key] = [made.cert, made.key];
  }
  return { key, cert, ca };
}

/** A new credential for hostId: its key and CA-signed certificate, with the CA to pin, as one PEM text. */
export async function issueHost(dataDir: string, hostId: string): Promise<IssuedHost> {
  checkHostId(hostId);
  const pki = await ensureServerPki(dataDir);
  const caKey = fs.readFileSync(path.join(dataDir, CA_KEY), 'utf8');
  const made = await makeCert(hostId, EXTENSIONS.host(hostId), CERT_DAYS, { key: caKey, cert: pki.ca });
  const x = new crypto.X509Certificate(made.cert);
  return { credential: formatCredential({ key: made.key, cert: made.cert, ca: pki.ca }), fingerprint256: x.fingerprint256, serial: x.serialNumber, notAfter: new Date(x.validTo).toISOString() };
}
