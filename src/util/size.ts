// Human sizes for the CLI: "4096", "64K", "1M", "10G", "2T" (binary units), and their printing.
const UNITS: Record<string, number> = { '': 1, B: 1, K: 2 ** 10, M: 2 ** 20, G: 2 ** 30, T: 2 ** 40, P: 2 ** 50 };

export function parseSize(text: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([KMGTP]?)(?:i?B)?\s*$/i.exec(text);
  if (!m) throw new RangeError(`"${text}" is not a size (examples: 4096, 64K, 1M, 10G)`);
  const value = Number(m[1]) * UNITS[m[2].toUpperCase()];
  if (!Number.isInteger(value)) throw new RangeError(`"${text}" is not a whole number of bytes`);
  if (!Number.isSafeInteger(value)) throw new RangeError(`"${text}" is too large: sizes must be below 8P (2^53 bytes)`);
  return value;
}

export function formatSize(bytes: number): string {
  for (const unit of ['P', 'T', 'G', 'M', 'K']) {
    const u = UNITS[unit];
    if (bytes >= u && bytes % u === 0) return `${bytes / u}${unit}`;
  }
  return `${bytes}`;
}
