// Per-key mutual exclusion for async work. The controller runs every table-changing flow of one disk (fault
// answers, reloads, pushes to agents) under that disk's lock, so the order in which answers leave on a
// connection is the order of the changes in the store: an agent never installs an older entry over a newer.
export class KeyedMutex<K> {
  private readonly tails = new Map<K, Promise<void>>();
  private readonly counts = new Map<K, number>();

  /** Runs holding or waiting for the key's lock: state a test can observe to know a flow is blocked. */
  users(key: K): number {
    return this.counts.get(key) ?? 0;
  }

  async run<T>(key: K, fn: () => Promise<T>): Promise<T> {
    const prev = this.tails.get(key) ?? Promise.resolve();
    let release!: () => void;
    const mine = new Promise<void>((resolve) => { release = resolve; });
    const tail = prev.then(() => mine);
    this.tails.set(key, tail);
    this.counts.set(key, this.users(key) + 1);
    try {
      await prev;
      return await fn();
    } finally {
      const n = this.users(key) - 1;
      if (n > 0) this.counts.set(key, n); else this.counts.delete(key);
      release();
      if (this.tails.get(key) === tail) this.tails.delete(key);
    }
  }
}
