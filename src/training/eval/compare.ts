import { join } from 'node:path';
import { percentile } from '../../common/stats.js';
import type { DecoderBundle } from '../../models/bundle.js';
import { DecoderRunner } from '../../models/decoder-runner.js';
import { createSession } from '../../models/ort.js';
import { evaluateBundle, type EvalMetrics } from './evaluate.js';
import { reconstructionGrid, writeFile } from '../report/figures.js';

export interface CompareRow {
  name: string;
  kind: string;
  dir: string;
  metrics: EvalMetrics;
  /** Batch-1 decode on this machine's CPU (ms, median and p99 of `latencyRuns`). */
  latencyMs: { p50: number; p99: number };
  trainingSeconds?: number;
}

/** Median/p99 time of a batch-1 decode through the same runner the server uses (CPU, 2 threads). */
export async function batchOneLatency(b: DecoderBundle, runs = 30, threads = 2): Promise<{ p50: number; p99: number }> {
  const { session } = await createSession(b.model, { intraOpThreads: threads });
  const runner = new DecoderRunner(session, b.manifest);
  const x = new Float32Array(b.manifest.input.neurons).fill(0.3);
  for (let i = 0; i < 3; i++) await runner.run(x, 1);
  const t: number[] = [];
  for (let i = 0; i < runs; i++) {
    const s = performance.now();
    await runner.run(x, 1);
    t.push(performance.now() - s);
  }
  return { p50: percentile(t, 50), p99: percentile(t, 99) };
}

/**
 * The report's Table I for several bundles on one dataset's test tier (repeats averaged), with
 * SSIM, PixCorr, two-way identification and batch-1 CPU latency, and a Figure 5-style grid: stimuli, then each decoder.
 */
export async function compareBundles(dirs: string[], data: string, o: { figure?: string; images?: number; latencyRuns?: number } = {}): Promise<{ rows: CompareRow[]; table: string; figure: string }> {
  const rows: CompareRow[] = [];
  const grids: { label: string; images: Float32Array }[] = [];
  let targets: Float32Array | undefined;
  let h = 0;
  let w = 0;
  const show = o.images ?? 10;
  for (const dir of dirs) {
    const r = await evaluateBundle(dir, data, { fid: 64 });
    h = r.h;
    w = r.w;
    const n = Math.min(show, r.count);
    targets ??= r.targets.subarray(0, n * h * w);
    grids.push({ label: r.bundle.manifest.name, images: r.recon.subarray(0, n * h * w) });
    rows.push({
      name: r.bundle.manifest.name,
      kind: r.bundle.manifest.kind,
      dir,
      metrics: r.metrics,
      latencyMs: await batchOneLatency(r.bundle, o.latencyRuns ?? 30),
      trainingSeconds: r.bundle.manifest.training.seconds,
    });
  }
  // Bundles of one recipe share a name: tell them apart by their folders in the table and the figure.
  const names = rows.map((r) => r.name);
  rows.forEach((r, k) => {
    if (names.indexOf(r.name) === names.lastIndexOf(r.name)) return;
    const folder = r.dir.split(/[\\/]/).filter(Boolean).slice(-2).join('/');
    r.name = `${r.name} (${folder})`;
    // The figure's label column is narrow: the folder alone.
    grids[k].label = folder;
  });
  const figure = o.figure ?? join(dirs[0], '..', 'compare.png');
  const n = targets!.length / (h * w);
  writeFile(figure, reconstructionGrid([{ label: 'stimulus', images: targets! }, ...grids], n, h, w, { columns: n }));
  const head = '| decoder | kind | SSIML | MSE | FID-64 | SSIM | PixCorr | 2-way ident (low / high) | CPU batch-1 ms (p50 / p99) | training s |';
  const lines = rows.map(
    (r) =>
      `| ${r.name} | ${r.kind} | ${r.metrics.ssiml.toFixed(3)} | ${r.metrics.mse.toFixed(3)} | ${r.metrics.fid?.toFixed(3) ?? '-'} | ${r.metrics.ssim.toFixed(3)} | ${r.metrics.pixcorr.toFixed(3)} | ${r.metrics.identLow?.toFixed(3) ?? '-'} / ${r.metrics.identHigh?.toFixed(3) ?? '-'} | ${r.latencyMs.p50.toFixed(1)} / ${r.latencyMs.p99.toFixed(1)} | ${r.trainingSeconds?.toFixed(0) ?? '-'} |`,
  );
  const table = [head, '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |', ...lines].join('\n');
  return { rows, table, figure };
}
