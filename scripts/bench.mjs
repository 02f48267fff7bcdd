// `npm run bench`: makes sure fio, losetup, dmsetup... are installed, then runs the typed benchmark
// (src/bench/main.ts, built to dist/bench/main.js by `npm run build`). Options: see src/bench/options.ts.
import { existsSync } from 'node:fs';
import { NET_TOOLS, ensureTools } from './ensure-tools.mjs';

const main = new URL('../dist/bench/main.js', import.meta.url);
if (!existsSync(main)) {
  console.error('bench: dist/bench/main.js is missing: run npm run build first');
  process.exit(1);
}
ensureTools(NET_TOOLS); // the hosts part builds a multi-host network with NBD
process.exitCode = await (await import(main.href)).main(process.argv.slice(2));
