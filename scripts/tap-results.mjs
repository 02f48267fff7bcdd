// Follows tap's TAP 14 output and records, for each top-level test file that finished, whether it passed
// and its leaf assertion counts (what tap's closing "# { total, pass, fail }" line sums). The integration
// harness uses it to know which files a crashed test VM had finished and what they reported.

const RESULT = /^( *)(not ok|ok) \d+(?: - (.*?))?(?: # (.*))?$/;
const SUBTEST = /^( *)# Subtest: (.*)$/;

export class TapResults {
  /** @type {Map<string, {ok: boolean, pass: number, fail: number, skip: number, todo: number}>} */
  files = new Map();
  #buf = '';
  /** indents of the open "# Subtest:" blocks; a result line at the top one's indent closes it */
  #open = [];
  #yaml = null;
  #counts = null;

  push(chunk) {
    this.#buf += chunk;
    let nl;
    while ((nl = this.#buf.indexOf('\n')) >= 0) {
      this.#line(this.#buf.slice(0, nl));
      this.#buf = this.#buf.slice(nl + 1);
    }
  }

  /** Sums of the finished files, in the shape of tap's closing line. */
  totals() {
    const t = { total: 0, pass: 0, fail: 0, skip: 0, todo: 0 };
    for (const c of this.files.values()) {
      for (const k of ['pass', 'fail', 'skip', 'todo']) t[k] += c[k];
    }
    t.total = t.pass + t.fail + t.skip + t.todo;
    return t;
  }

  #line(line) {
    // A failed assertion's YAML diagnostics can hold any text: skip from "---" to "...".
    if (this.#yaml !== null) {
      if (line === `${this.#yaml}...`) this.#yaml = null;
      return;
    }
    const yaml = /^( *)---$/.exec(line);
    if (yaml) {
      this.#yaml = yaml[1];
      return;
    }
    const sub = SUBTEST.exec(line);
    if (sub) {
      this.#open.push(sub[1].length);
      if (sub[1].length === 0) this.#counts = { ok: false, pass: 0, fail: 0, skip: 0, todo: 0 };
      return;
    }
    const r = RESULT.exec(line);
    if (!r) return;
    const indent = r[1].length;
    const ok = r[2] === 'ok';
    if (this.#open.at(-1) === indent) {
      this.#open.pop();
      if (indent === 0 && this.#counts && r[3] !== undefined) {
        this.files.set(r[3], { ...this.#counts, ok });
        this.#counts = null;
      }
      return;
    }
    if (!this.#counts) return;
    const directive = r[4] ?? '';
    if (/^SKIP\b/i.test(directive)) this.#counts.skip++;
    else if (/^TODO\b/i.test(directive)) this.#counts.todo++;
    else if (ok) this.#counts.pass++;
    else this.#counts.fail++;
  }
}
