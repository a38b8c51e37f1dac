import assert from "node:assert/strict";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { before, describe, test } from "node:test";
import { ModelRegistry } from "../src/engine/registry.ts";
import { createApp } from "../src/http/app.ts";
import { createBackend } from "../src/runtimes/backends.ts";
import { FolderStorage } from "../src/storage/fs.ts";
import { FIXTURES_DIR } from "./support/fixtures.ts";

/*
 * Parity with the Hugging Face pipelines: every fixture with a pipeline_reference.json (written by
 * tools/fixtures/pipelines.py, an independent Python re-expression of the transformers pipelines'
 * pre/post-processing run on the PyTorch fp32 outputs) is served in process and each case is POSTed
 * to /models/<fixture>.
 *
 * fp32 graph: the answer must have the reference's structure, the same strings / labels / indices /
 * offsets exactly, and every number within 1e-4.
 *
 * int8 graph: reported, not held to the reference's numbers (int8 logits drift by up to ~0.6). Per
 * case the diagnostics say whether everything but the numbers agrees (labels, spans, answers, list
 * lengths) and the largest score difference. Asserted: the top-1 prediction (best label, best answer
 * span, best token per mask, best choice) is the same as fp32's wherever the fp32 reference shows a
 * clear margin — top-1 score at least e times the runner-up (a log-ratio ≥ 1; for raw scores, a gap
 * ≥ 1). Token classification and feature extraction are only reported.
 */

interface PipelineCase {
  name: string;
  parameters: Record<string, unknown>;
  inputs: unknown;
  expected: unknown;
}

const TOLERANCE = 1e-4;
const CLEAR_MARGIN = 1;

const fixtures = readdirSync(FIXTURES_DIR)
  .filter((name) => existsSync(`${FIXTURES_DIR}/${name}/pipeline_reference.json`))
  .sort();

const casesOf = (fixture: string): PipelineCase[] =>
  JSON.parse(readFileSync(`${FIXTURES_DIR}/${fixture}/pipeline_reference.json`, "utf8")).cases;

/** Integer fields (token ids, token indices, character offsets): always compared exactly. */
const EXACT_KEYS = new Set(["token", "index", "start", "end"]);

/**
 * Differences between `actual` and `expected`: the paths where they differ (scores and vectors
 * beyond `tolerance`, anything else not identical) and the largest score / vector difference.
 */
function compare(actual: unknown, expected: unknown, tolerance: number) {
  const mismatches: string[] = [];
  let maxDiff = 0;
  const walk = (a: unknown, e: unknown, path: string, key: string) => {
    if (typeof e === "number" && !EXACT_KEYS.has(key)) {
      if (typeof a !== "number") return void mismatches.push(`${path}: ${JSON.stringify(a)} is not a number (expected ${e})`);
      const d = Math.abs(a - e);
      maxDiff = Math.max(maxDiff, d);
      if (!(d <= tolerance)) mismatches.push(`${path}: ${a} vs ${e} (|Δ| ${d.toExponential(2)})`);
      return;
    }
    if (Array.isArray(e)) {
      if (!Array.isArray(a)) return void mismatches.push(`${path}: expected an array, got ${JSON.stringify(a)?.slice(0, 80)}`);
      if (a.length !== e.length) mismatches.push(`${path}: length ${a.length} vs ${e.length}`);
      for (let i = 0; i < Math.min(a.length, e.length); i++) walk(a[i], e[i], `${path}[${i}]`, key);
      return;
    }
    if (e !== null && typeof e === "object") {
      if (a === null || typeof a !== "object" || Array.isArray(a)) {
        return void mismatches.push(`${path}: expected an object, got ${JSON.stringify(a)?.slice(0, 80)}`);
      }
      const ka = Object.keys(a).sort();
      const ke = Object.keys(e).sort();
      if (ka.join() !== ke.join()) mismatches.push(`${path}: keys ${ka.join(",")} vs ${ke.join(",")}`);
      for (const k of ke) if (k in (a as object)) walk((a as any)[k], (e as any)[k], `${path}.${k}`, k);
      return;
    }
    if (a !== e) mismatches.push(`${path}: ${JSON.stringify(a)} vs ${JSON.stringify(e)}`);
  };
  walk(actual, expected, "$", "");
  return { mismatches, maxDiff };
}

/** Token classification: how many of the expected entities (label, start, end) the answer also has. */
function entityMatches(actual: unknown, expected: unknown): [number, number] {
  const flat = (x: unknown): any[] => (Array.isArray(x) ? x.flatMap((y) => (Array.isArray(y) ? flat(y) : [y])) : []);
  const key = (e: any) => `${e.entity ?? e.entity_group}@${e.start}-${e.end}`;
  const got = new Set(flat(actual).map(key));
  const want = flat(expected).map(key);
  return [want.filter((k) => got.has(k)).length, want.length];
}

/** How clearly the best score beats the runner-up (log-ratio for probabilities, else the gap). */
function margin(best: number, second: number | undefined): number {
  if (second === undefined) return 0; // nothing to compare with: no claim
  return best > 0 && second > 0 && best <= 1 ? Math.log(best / second) : best - second;
}

type Top1 = { key: string; margin: number };

/** The top-1 predictions of an answer, each with the fp32 margin that makes it trustworthy. */
function top1(task: string, answer: any, inputs: unknown): Top1[] {
  const listOfInputs = Array.isArray(inputs);
  const perInput = (f: (one: any) => Top1[]) => (listOfInputs ? (answer as any[]).flatMap(f) : f(answer));
  const ranked = (xs: any[], key: (x: any) => string): Top1[] =>
    xs.length === 0 ? [] : [{ key: key(xs[0]), margin: xs.length === 1 ? Infinity : margin(xs[0].score, xs[1]?.score) }];
  switch (task) {
    case "text-classification":
      // One list per input, always; a list cut to one label (top_k 1) shows no margin.
      return (answer as any[][]).flatMap((xs) =>
        ranked(xs, (x) => x.label).map((t) => (xs.length === 1 ? { ...t, margin: 0 } : t)),
      );
    case "zero-shot-classification":
      return perInput((r) => [
        { key: r.labels[0], margin: r.labels.length === 1 ? Infinity : margin(r.scores[0], r.scores[1]) },
      ]);
    case "multiple-choice":
      return perInput((xs) => ranked(xs, (x) => `${x.index}`));
    case "fill-mask":
      return perInput((r) => (Array.isArray(r[0]) ? r : [r]).flatMap((xs: any[]) => ranked(xs, (x) => `${x.token}`)));
    case "question-answering":
      return perInput((r) =>
        Array.isArray(r)
          ? ranked(r, (x) => `${x.start}-${x.end}`)
          : [{ key: `${r.start}-${r.end}`, margin: 0 }], // a single answer shows no runner-up
      );
    default:
      return [];
  }
}

/** Cosine similarity of two vectors (feature extraction diagnostics). */
function minCosine(a: unknown, b: unknown): number {
  const vectors = (x: unknown): number[][] =>
    Array.isArray(x) && typeof x[0] === "number" ? [x as number[]] : Array.isArray(x) ? (x as unknown[]).flatMap(vectors) : [];
  const va = vectors(a);
  const vb = vectors(b);
  let min = 1;
  va.forEach((u, i) => {
    const v = vb[i] ?? [];
    const dot = u.reduce((s, x, j) => s + x * (v[j] ?? 0), 0);
    const norm = Math.hypot(...u) * Math.hypot(...v);
    min = Math.min(min, norm > 0 ? dot / norm : 0);
  });
  return min;
}

async function makeApp(preferQuantized: boolean) {
  const registry = new ModelRegistry(new FolderStorage(FIXTURES_DIR), await createBackend("native"), { preferQuantized });
  return createApp({ registry, cache: false });
}

type App = Awaited<ReturnType<typeof makeApp>>;

async function ask(app: App, fixture: string, c: PipelineCase) {
  const res = await app.request(`/models/${fixture}`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ inputs: c.inputs, parameters: c.parameters }),
  });
  const body = await res.json();
  assert.equal(res.status, 200, `${fixture} / ${c.name}: HTTP ${res.status} ${JSON.stringify(body)}`);
  return body;
}

async function tasksOf(app: App): Promise<Map<string, string>> {
  const models = (await (await app.request("/models")).json()) as { id: string; task: string }[];
  return new Map(models.map((m) => [m.id, m.task]));
}

interface HeadStats {
  cases: number;
  fp32Pass: number;
  fp32MaxDiff: number;
  int8Agree: number;
  int8MaxDiff: number;
  top1Checked: number;
  top1Agree: number;
  entitiesFound: number;
  entitiesTotal: number;
}

const stats = new Map<string, HeadStats>();
const statsOf = (task: string) => {
  let s = stats.get(task);
  if (!s) stats.set(task, (s = { cases: 0, fp32Pass: 0, fp32MaxDiff: 0, int8Agree: 0, int8MaxDiff: 0, top1Checked: 0, top1Agree: 0, entitiesFound: 0, entitiesTotal: 0 }));
  return s;
};

describe("pipeline parity: fp32 graph vs the transformers pipelines (tools/fixtures/pipelines.py)", () => {
  let app: App;
  let tasks: Map<string, string>;
  before(async () => {
    app = await makeApp(false);
    tasks = await tasksOf(app);
  });

  test("every head has reference cases", () => {
    assert.ok(fixtures.length >= 10, `${fixtures.length} fixtures with pipeline_reference.json`);
  });

  for (const fixture of fixtures) {
    test(fixture, async (t) => {
      const task = tasks.get(fixture)!;
      assert.ok(task, `${fixture} is served`);
      for (const c of casesOf(fixture)) {
        await t.test(c.name, async () => {
          const s = statsOf(task);
          s.cases++;
          const actual = await ask(app, fixture, c);
          const { mismatches, maxDiff } = compare(actual, c.expected, TOLERANCE);
          s.fp32MaxDiff = Math.max(s.fp32MaxDiff, maxDiff);
          assert.deepEqual(mismatches, [], `${fixture} / ${c.name}:\n  ${mismatches.slice(0, 12).join("\n  ")}`);
          s.fp32Pass++;
        });
      }
    });
  }
});

describe("pipeline parity: int8 graph (reported; top-1 asserted where fp32 margins are clear)", () => {
  let app: App;
  let tasks: Map<string, string>;
  before(async () => {
    app = await makeApp(true);
    tasks = await tasksOf(app);
  });

  for (const fixture of fixtures) {
    test(fixture, async (t) => {
      const task = tasks.get(fixture)!;
      for (const c of casesOf(fixture)) {
        const s = statsOf(task);
        const actual = await ask(app, fixture, c);
        const { mismatches, maxDiff } = compare(actual, c.expected, Infinity);
        const agree = mismatches.length === 0;
        if (agree) s.int8Agree++;
        // Scores are only comparable item by item where the answers line up.
        if (agree) s.int8MaxDiff = Math.max(s.int8MaxDiff, maxDiff);
        let extra = "";
        if (task === "feature-extraction") extra = `, min cosine ${minCosine(actual, c.expected).toFixed(4)}`;
        if (task === "token-classification") {
          const [found, total] = entityMatches(actual, c.expected);
          s.entitiesFound += found;
          s.entitiesTotal += total;
          extra = `, ${found}/${total} fp32 entities (label, start, end) found`;
        }
        t.diagnostic(
          `${c.name}: ${agree ? "agrees" : `differs (${mismatches.slice(0, 3).join("; ")})`}, max score |Δ| ${maxDiff.toFixed(4)}${extra}`,
        );
        const want = top1(task, c.expected, c.inputs);
        const got = top1(task, actual, c.inputs);
        want.forEach((w, i) => {
          if (w.margin < CLEAR_MARGIN) return;
          s.top1Checked++;
          assert.equal(got[i]?.key, w.key, `${fixture} / ${c.name}: int8 top-1 #${i} (fp32 margin ${w.margin.toFixed(2)})`);
          s.top1Agree++;
        });
      }
    });
  }

  test("summary per head", (t) => {
    const rows = [...stats.entries()].sort(([a], [b]) => a.localeCompare(b));
    for (const [task, s] of rows) {
      const line =
        `${task}: ${s.cases} cases; fp32 ${s.fp32Pass}/${s.cases} within ${TOLERANCE} (max |Δ| ${s.fp32MaxDiff.toExponential(1)}); ` +
        `int8 ${s.int8Agree}/${s.cases} agree on everything but scores (max score |Δ| ${s.int8MaxDiff.toFixed(4)} over those), ` +
        `top-1 ${s.top1Agree}/${s.top1Checked} clear-margin checks` +
        (s.entitiesTotal ? `; ${s.entitiesFound}/${s.entitiesTotal} fp32 entities found in int8` : "");
      t.diagnostic(line);
      console.log(`pipelines-parity: ${line}`);
    }
    assert.ok(rows.length >= 7, `${rows.length} heads covered`);
  });
});
