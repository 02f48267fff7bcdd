// parseSize/formatSize: the CLI's size syntax.
import t from 'tap';
import { formatSize, parseSize } from '../../src/util/size.js';

t.test('parses binary suffixes', async (t) => {
  t.equal(parseSize('4096'), 4096);
  t.equal(parseSize('64K'), 65536);
  t.equal(parseSize('1m'), 1 << 20);
  t.equal(parseSize('10G'), 10 * 2 ** 30);
  t.equal(parseSize('1T'), 2 ** 40);
  t.equal(parseSize('2MiB'), 2 << 20);
  t.equal(parseSize('1.5K'), 1536);
});

t.test('rejects what is not a size', async (t) => {
  for (const bad of ['', 'abc', '-1', '1X', '0.3', '1KK']) t.throws(() => parseSize(bad), RangeError, bad);
});

t.test('formats exact units', async (t) => {
  t.equal(formatSize(1 << 20), '1M');
  t.equal(formatSize(3 * 2 ** 30), '3G');
  t.equal(formatSize(1000), '1000');
});
