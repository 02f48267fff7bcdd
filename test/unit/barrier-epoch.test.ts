// The barrier's epochs wrap like the Int32 word that holds them: a barrier issued when the word is at
// 2^31 - 1 must be reached by the worker storing the wrapped value (it once waited for 2^31, which no Int32
// word can hold, and timed out).
import t from 'tap';
import { CTL_DRAINED, CTL_EPOCH, epochAfter, epochReached } from '../../src/ublk/queue-worker.js';

t.test('a barrier across the Int32 wrap is reached by the wrapped epoch', async (t) => {
  for (const start of [0, 41, 0x7ffffffe, 0x7fffffff, -1, -0x80000000]) {
    const ctl = new Int32Array(CTL_DRAINED + 1);
    ctl[CTL_EPOCH] = start;
    ctl[CTL_DRAINED] = start; // the worker has drained everything so far
    const target = epochAfter(Atomics.add(ctl, CTL_EPOCH, 1)); // as UblkDevice.barrier() does
    t.notOk(epochReached(Atomics.load(ctl, CTL_DRAINED), target), `start ${start}: not reached before the worker drains`);
    Atomics.store(ctl, CTL_DRAINED, Atomics.load(ctl, CTL_EPOCH)); // as the queue worker does
    t.ok(epochReached(Atomics.load(ctl, CTL_DRAINED), target), `start ${start}: reached once it has (target ${target})`);
    t.equal(target, ctl[CTL_EPOCH], 'the target is the value the word holds');
  }
});

t.test('a later epoch, even past the wrap, counts as reached; an earlier one does not', async (t) => {
  t.ok(epochReached(-0x80000000 + 5, 0x7ffffff0));
  t.notOk(epochReached(0x7ffffff0, -0x80000000 + 5));
  t.ok(epochReached(7, 7));
});
