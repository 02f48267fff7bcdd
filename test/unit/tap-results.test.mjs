// The integration harness's TAP follower: which files finished, with what counts, when the stream stops
// in the middle of a file (a crashed test VM).
import t from 'tap';
import { TapResults } from '../../scripts/tap-results.mjs';

const finished = `TAP version 14
1..3
# Subtest: test/integration/a.test.ts
    # Subtest: first
        ok 1 - should be equal
        not ok 2 - reads back
          ---
          found: |
            ok 7 - text in a diagnostic is not a result
          # Subtest: nor is this
          ...
        ok 3 - later # SKIP no fio
        1..3
    not ok 1 - first # time=5ms
    ok 2 - a direct assertion
    1..2
not ok 1 - test/integration/a.test.ts # time=9ms

# Subtest: test/integration/b.test.ts
    ok 1 - one
    ok 2 - two # TODO not yet
    1..2
ok 2 - test/integration/b.test.ts # time=3ms
`;

t.test('records each finished file with its leaf counts', async (t) => {
  const r = new TapResults();
  r.push(finished);
  t.same([...r.files.keys()], ['test/integration/a.test.ts', 'test/integration/b.test.ts']);
  t.same(r.files.get('test/integration/a.test.ts'), { ok: false, pass: 2, fail: 1, skip: 1, todo: 0 });
  t.same(r.files.get('test/integration/b.test.ts'), { ok: true, pass: 1, fail: 0, skip: 0, todo: 1 });
  t.same(r.totals(), { total: 6, pass: 3, fail: 1, skip: 1, todo: 1 });
});

t.test('a file cut off mid-stream is not recorded, whatever chunks the stream arrives in', async (t) => {
  const cut = `${finished}
# Subtest: test/integration/c.test.ts
    # Subtest: kill -9 of the agent
        ok 1 - fio is still writing
        ok 2 - fio wa`;
  const r = new TapResults();
  for (let i = 0; i < cut.length; i += 7) r.push(cut.slice(i, i + 7));
  t.same([...r.files.keys()], ['test/integration/a.test.ts', 'test/integration/b.test.ts']);
  t.equal(r.totals().total, 6);
});
