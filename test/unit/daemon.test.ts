// How long a background start waits for its daemon: the default, and the emulated test VM's longer wait.
import t from 'tap';
import { startTimeoutMs } from '../../src/cli/daemon.js';

t.test('45 s unless VDISK_START_TIMEOUT gives seconds; nonsense keeps the default', async (t) => {
  t.equal(startTimeoutMs({}), 45_000);
  t.equal(startTimeoutMs({ VDISK_START_TIMEOUT: '180' }), 180_000, 'the test VM waits 3 minutes');
  t.equal(startTimeoutMs({ VDISK_START_TIMEOUT: '0.5' }), 500);
  for (const bad of ['', '0', '-5', 'soon']) t.equal(startTimeoutMs({ VDISK_START_TIMEOUT: bad }), 45_000, `"${bad}" is ignored`);
});
