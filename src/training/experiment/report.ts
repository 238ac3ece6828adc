import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { readNpy } from '../../common/npy.js';
import { labelledGrid, svgToPng, sweepFigureSvg, type SweepPanel } from './figure.js';
import type { SweptValue } from './experiments.js';
import { readPlan, runsByValue, writeFileAtomic, type Plan } from './plan.js';
import { readRunResult, readRunStatus, runFiles, type RunResult } from './run-one.js';

/** Test-tier columns, the report's Table I first; each gets a figure panel. */
const PANELS = [
  { key: 'ssiml', label: 'SSIML (test, lower is better)' },
  { key: 'mse', label: 'MSE (test, lower is better)' },
  { key: 'fid', label: 'FID-64 (test, lower is better)' },
  { key: 'pixcorr', label: 'PixCorr (test, higher is better)' },
] as const;
const METRIC_KEYS = ['ssiml', 'mse', 'fid', 'ssim', 'pixcorr', 'identLow', 'identHigh'] as const;

export const REPORT_FILES = { csv: 'results.csv', summary: 'summary.json', svg: 'figure.svg', png: 'figure.png', grid: 'reconstructions.png' } as const;

export interface ValueSummary {
  value: number | string;
  runs: number;
  done: number;
  /** Per test metric over the finished seeds. */
  test: Record<string, Stat>;
  /**
   * Per test metric, this value's score minus the first swept value's, seed by seed (the seeds that
   * finished both): runs of one seed share the seed of their initialisation and batch order, so the spread of
   * the difference is the spread that says whether the change is more than seed noise. Absent for
   * the first value.
   */
  vsFirst?: Record<string, Stat>;
}

export interface Stat {
  mean: number;
  sd: number;
  n: number;
}

export interface ExperimentReport {
  csv: string;
  summary: ValueSummary[];
  /** Absent while no run has finished. */
  figure?: { svg: string; png: string };
  grid?: string;
  done: number;
  total: number;
  /** summary as a text table (mean +- s.d. per value, paired differences against the first value), for the terminal and notes. */
  table: string;
}

const meanSd = (v: number[]): Stat => {
  const n = v.length;
  const mean = n ? v.reduce((a, b) => a + b, 0) / n : NaN;
  // Sample standard deviation, as "the average and standard deviation across three runs".
  const sd = n > 1 ? Math.sqrt(v.reduce((a, b) => a + (b - mean) ** 2, 0) / (n - 1)) : 0;
  return { mean, sd, n };
};

const cell = (v: number | string | undefined): string => (v === undefined || (typeof v === 'number' && !Number.isFinite(v)) ? '' : typeof v === 'number' ? String(Number(v.toPrecision(6))) : /[",\n]/.test(v) ? `"${v.replace(/"/g, '""')}"` : v);

/** results.csv: one row per planned run (value x seed), finished or not, test then validation scores. */
function resultsCsv(expDir: string, plan: Plan, results: (RunResult | undefined)[]): string {
  const head = ['experiment', 'decoder', 'swept', 'value', 'seed', 'run', 'state', ...METRIC_KEYS.map((k) => `test_${k}`), ...METRIC_KEYS.map((k) => `validation_${k}`), 'neurons', 'train_trials', 'steps', 'train_seconds', 'seconds'];
  const rows = runsByValue(plan).map(({ index: i }) => {
    const run = plan.runs[i];
    const r = results[i];
    const state = r ? 'done' : (readRunStatus(expDir, run)?.state ?? 'pending');
    const m = (t: 'test' | 'validation', k: string): number | undefined => (r ? (r[t] as Record<string, number | undefined>)[k] : undefined);
    return [plan.experiment, plan.decoder, plan.swept.key, run.value, run.seed, run.id, state, ...METRIC_KEYS.map((k) => m('test', k)), ...METRIC_KEYS.map((k) => m('validation', k)), r?.neurons, r?.trainTrials, r?.steps, r?.trainSeconds, r?.seconds].map(cell).join(',');
  });
  return [head.join(','), ...rows].join('\n') + '\n';
}

const TABLE_METRICS = [
  ['ssiml', 'SSIML', 4],
  ['mse', 'MSE', 4],
  ['fid', 'FID-64', 3],
  ['pixcorr', 'PixCorr', 3],
  ['identLow', 'ident low', 3],
  ['identHigh', 'ident high', 3],
] as const;

/**
 * The summary as text: per value the finished seeds, each test metric as mean +- s.d., then SSIML and
 * MSE against the first value, paired by seed. Judge a difference by its mean against its s.d./sqrt(n);
 * with one seed there is no s.d. to judge by, and ridge's seeds are identical (s.d. 0 says nothing).
 */
export function summaryTable(plan: Plan, summary: ValueSummary[]): string {
  const pm = (x: Stat, digits: number): string => (x.n ? `${x.mean.toFixed(digits)}${x.n > 1 ? ` +- ${x.sd.toFixed(digits)}` : ''}` : '-');
  // The pairs may be fewer than the value's finished seeds (the first value's unfinished): then say how many.
  const signed = (x: Stat | undefined, done: number, digits: number): string => (x?.n ? `${x.mean >= 0 ? '+' : ''}${pm(x, digits)}${x.n < done ? ` (n=${x.n})` : ''}` : '-');
  const first = String(plan.swept.values[0]);
  const head = [plan.swept.key, 'seeds', ...TABLE_METRICS.map(([, label]) => label), `SSIML vs ${first}`, `MSE vs ${first}`];
  const rows = summary.map((s) => [String(s.value), `${s.done}/${s.runs}`, ...TABLE_METRICS.map(([k, , d]) => pm(s.test[k], d)), signed(s.vsFirst?.ssiml, s.done, 4), signed(s.vsFirst?.mse, s.done, 4)]);
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: string[]): string => cells.map((c, i) => (i < 2 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ').trimEnd();
  return [`test tier, mean +- s.d. over seeds; "vs ${first}": paired by seed`, line(head), ...rows.map(line)].join('\n');
}

/** x positions of the swept values: log10 of numbers on a log axis, else evenly spaced. */
const positions = (plan: Plan): number[] => plan.swept.values.map((v, i) => (plan.swept.scale === 'log' ? Math.log10(Number(v)) : i));

/**
 * The experiment folder's report from whatever has finished: results.csv, summary.json, the figure
 * (SVG and PNG: each Table I metric against the swept value, mean and s.d. over seeds) and
 * reconstructions.png (test stimuli, then the first finished seed's reconstructions per value).
 * Safe to run at any time; unfinished runs are rows without scores.
 */
export async function writeExperimentReport(expDir: string): Promise<ExperimentReport> {
  const plan = readPlan(expDir);
  const results = plan.runs.map((r) => readRunResult(expDir, r));
  const csv = join(expDir, REPORT_FILES.csv);
  // Temporary file and rename: a Slurm report job and `experiment report` by hand may overlap.
  writeFileAtomic(csv, resultsCsv(expDir, plan, results));
  const xs = positions(plan);
  const summary: ValueSummary[] = plan.swept.values.map((value) => {
    const mine = plan.runs.map((r, i) => [r, results[i]] as const).filter(([r]) => r.value === value);
    const done = mine.flatMap(([, r]) => (r ? [r] : []));
    const test = Object.fromEntries(METRIC_KEYS.map((k) => [k, meanSd(done.map((r) => (r.test as Record<string, number | undefined>)[k]).filter((v): v is number => v !== undefined && Number.isFinite(v)))]));
    return { value, runs: mine.length, done: done.length, test };
  });
  const first = plan.swept.values[0];
  const score = (value: SweptValue, seed: number, k: string): number | undefined => {
    const i = plan.runs.findIndex((r) => r.value === value && r.seed === seed);
    const v = i >= 0 ? (results[i]?.test as Record<string, number | undefined> | undefined)?.[k] : undefined;
    return v !== undefined && Number.isFinite(v) ? v : undefined;
  };
  for (const s of summary.slice(1))
    s.vsFirst = Object.fromEntries(
      METRIC_KEYS.map((k) => [
        k,
        meanSd(plan.seeds.flatMap((seed) => {
          const a = score(s.value, seed, k);
          const b = score(first, seed, k);
          return a !== undefined && b !== undefined ? [a - b] : [];
        })),
      ]),
    );
  writeFileAtomic(join(expDir, REPORT_FILES.summary), JSON.stringify({ experiment: plan.experiment, decoder: plan.decoder, swept: plan.swept, seeds: plan.seeds, values: summary }, null, 1) + '\n');
  const done = results.filter(Boolean).length;
  const report: ExperimentReport = { csv, summary, done, total: plan.runs.length, table: summaryTable(plan, summary) };
  if (!done) return report;

  const panels: SweepPanel[] = PANELS.map((p) => ({
    label: p.label,
    points: summary.map((s, i) => {
      const values = plan.runs.flatMap((r, j) => (r.value === s.value && results[j] ? [(results[j]!.test as Record<string, number | undefined>)[p.key] ?? NaN] : []));
      return { x: xs[i], values, mean: s.test[p.key].mean, sd: s.test[p.key].sd };
    }),
  }));
  const seeds = plan.seeds.length;
  const decoder = plan.decoder === 'ridge' ? 'ridge' : `${plan.decoder} (${plan.training.recipe} recipe, ${plan.training.profile})`;
  const title = `${plan.experiment}: ${decoder}, test tier, mean and s.d. over ${seeds} seed${seeds > 1 ? 's' : ''} (${done}/${plan.runs.length} runs)`;
  const svg = sweepFigureSvg(title, plan.swept.axis, plan.swept.values.map((v, i) => ({ x: xs[i], label: String(v) })), panels);
  const svgFile = join(expDir, REPORT_FILES.svg);
  const pngFile = join(expDir, REPORT_FILES.png);
  writeFileAtomic(svgFile, svg);
  writeFileAtomic(pngFile, await svgToPng(svg));
  report.figure = { svg: svgFile, png: pngFile };

  // Figure 2: one row per swept value, the lowest seed that finished.
  const shown = plan.swept.values.flatMap((value) => {
    const run = runsByValue(plan).find((r) => r.value === value && results[r.index] && existsSync(runFiles(expDir, r).recon));
    return run ? [{ value, files: runFiles(expDir, run) }] : [];
  });
  if (shown.length) {
    const stim = readNpy(shown[0].files.stimuli);
    const [count, h, w] = stim.shape;
    const rows = [{ label: 'stimulus', images: stim.data as Float32Array }, ...shown.map((s) => ({ label: `${plan.swept.key} ${s.value}`, images: readNpy(s.files.recon).data as Float32Array }))];
    report.grid = join(expDir, REPORT_FILES.grid);
    writeFileAtomic(report.grid, await labelledGrid(rows, count, h, w));
  }
  return report;
}
