import { mkdtempSync, readFileSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execFileSync, spawnSync } from 'node:child_process';
import { beforeAll, describe, expect, it } from 'vitest';
import { trainRidge } from '../../src/training/ridge/train-ridge.js';
import { evaluateBundle, decodeRows } from '../../src/training/eval/evaluate.js';
import { loadBundle, applyResponseTransform } from '../../src/models/bundle.js';
import { readModel } from '../../src/models/onnx/index.js';
import { createSession } from '../../src/models/ort.js';
import { SensoriumDataset } from '../../src/datasets/sensorium.js';
import { onnxCheck } from '../helpers/onnx-check.js';
import { tinyDataset } from '../helpers/tiny-dataset.js';
import { repoRoot } from '../helpers/paths.js';

let data: string;
let bundleDir: string;
beforeAll(async () => {
  data = await tinyDataset();
  bundleDir = join(mkdtempSync(join(tmpdir(), 'cc-ridge-')), 'ridge');
  await trainRidge({ data, out: bundleDir, quiet: true, log: () => undefined });
}, 120_000);

/** Python with the onnx package: Debian's python3-onnx lives under /usr/bin/python3. */

describe('ridge decoder', () => {
  it('writes a valid bundle whose ONNX graph is MatMul + Add', () => {
    const b = loadBundle(bundleDir);
    expect(b.manifest.kind).toBe('ridge');
    expect(b.manifest.input.neurons).toBe(300);
    expect(b.stdScale).toHaveLength(300);
    const ops = readModel(b.model).graph.nodes.map((n) => n.opType);
    expect(ops).toEqual(['MatMul', 'Add', 'Reshape', 'Identity']);
    const cfg = b.manifest.training.config as { path: { alpha: number; valMse: number }[]; chosenAlpha: number };
    expect(cfg.path.length).toBeGreaterThan(3);
    expect(Math.min(...cfg.path.map((p) => p.valMse))).toBe(cfg.path.find((p) => p.alpha === cfg.chosenAlpha)!.valMse);
  });

  it('reconstructs test images better than an untrained baseline on every Table I metric', async () => {
    const r = await evaluateBundle(bundleDir, data, { fid: 0 });
    // A decoder that ignores the responses scores SSIML ~0.49 and PixCorr ~0 (the report).
    expect(r.metrics.pixcorr).toBeGreaterThan(0.2);
    expect(r.metrics.ssiml).toBeLessThan(0.45);
    // Shuffling which responses go with which image must hurt: the decoder uses the responses.
    const ds = SensoriumDataset.open(data);
    const b = loadBundle(bundleDir);
    const { session } = await createSession(b.model);
    const n = ds.neurons;
    const tests = ds.indices('test');
    const rows = new Float32Array(2 * n);
    rows.set(ds.trial(tests[0]).responses, 0);
    rows.set(ds.trial(tests[0]).responses, n);
    const out = await decodeRows(session, b, rows, 2);
    expect(Array.from(out.subarray(0, 2304))).toEqual(Array.from(out.subarray(2304)));
  });

  it('passes the ONNX checker (python3-onnx)', (ctx) => {
    const out = onnxCheck(`${bundleDir}/model.onnx`);
    if (out === undefined) return ctx.skip();
    expect(out).toBe('ok 17');
  });

  it('applies std scaling exactly as the manifest says (server and eval share the function)', () => {
    const b = loadBundle(bundleDir);
    const raw = Float32Array.from({ length: 300 }, (_, i) => i / 10);
    const x = applyResponseTransform(raw, b.stdScale, 'none');
    expect(x[10]).toBe(Math.fround(raw[10] * b.stdScale[10]));
  });
});

describe('bundle validation', () => {
  const broken = (mutate: (dir: string) => void): string => {
    const d = join(mkdtempSync(join(tmpdir(), 'cc-bad-')), 'b');
    execFileSync('cp', ['-r', bundleDir, d]);
    mutate(d);
    return d;
  };
  it('names what is wrong', () => {
    expect(() => loadBundle('/nope')).toThrow(/CC_ERR_BUNDLE: bundle \/nope: no manifest\.json/);
    const edit = (d: string, f: (m: Record<string, unknown>) => void): void => {
      const m = JSON.parse(readFileSync(join(d, 'manifest.json'), 'utf8'));
      f(m);
      writeFileSync(join(d, 'manifest.json'), JSON.stringify(m));
    };
    expect(() => loadBundle(broken((d) => edit(d, (m) => (m.kind = 'banana'))))).toThrow(/kind: Invalid enum value/);
    expect(() => loadBundle(broken((d) => edit(d, (m) => (m.formatVersion = 99))))).toThrow(/format version 99 is newer/);
    expect(() => loadBundle(broken((d) => writeFileSync(join(d, 'model.onnx'), 'garbage')))).toThrow(/does not match the manifest's sha256/);
    expect(() => loadBundle(broken((d) => edit(d, (m) => ((m.input as { neurons: number }).neurons = 12))))).toThrow(/std_scale\.npy has 300 values, manifest says 12 neurons/);
  });

  it('eval --single-trials decodes every test repeat on its own: one row per trial, and a linear decoder averages them back to the repeat-averaged images', async () => {
    const ds = SensoriumDataset.open(data);
    const trials = ds.indices('test').length;
    const averaged = await evaluateBundle(bundleDir, data, { fid: 0 });
    const single = await evaluateBundle(bundleDir, data, { fid: 0, singleTrials: true });
    expect(single.count).toBe(trials);
    expect(averaged.count).toBeLessThan(trials);
    // Ridge is linear: the mean of its single-trial images of one stimulus is its image of the mean response.
    const ids = ds.indices('test').map((t) => ds.imageIds[t]);
    const first = ids[0];
    const rows = ids.map((id, i) => (id === first ? i : -1)).filter((i) => i >= 0);
    expect(rows.length).toBeGreaterThan(1);
    const P = single.h * single.w;
    const mean = new Float32Array(P);
    for (const r of rows) for (let k = 0; k < P; k++) mean[k] += single.recon[r * P + k] / rows.length;
    // The averaged rows come in order of first appearance, so the first trial's image is row 0.
    let worst = 0;
    for (let k = 0; k < P; k++) worst = Math.max(worst, Math.abs(mean[k] - averaged.recon[k]));
    expect(worst).toBeLessThan(1e-3);
  });

  it('eval refuses a dataset with a different neuron count', async () => {
    const other = await tinyDataset({}, 120);
    await expect(evaluateBundle(bundleDir, other, { fid: 0 })).rejects.toThrow(/CC_ERR_NEURON_COUNT: frame has 120 neurons, model ridge-300n expects 300/);
  });
});

describe('CLI end to end', () => {
  it('synth --tiny, train ridge, eval print Table I columns and write the grid', () => {
    const root = mkdtempSync(join(tmpdir(), 'cc-cli-'));
    const cli = join(repoRoot, 'bin/cortexcast.js');
    const run = (...args: string[]): string => execFileSync('node', [cli, ...args], { cwd: root, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    expect(run('synth', '--tiny', '--out', 'ds', '--neurons', '200')).toMatch(/wrote \d+ trials x 200 neurons/);
    expect(run('train', 'ridge', '--data', 'ds', '--out', 'bundle')).toMatch(/bundle bundle: ridge-200n/);
    const out = run('eval', '--model', 'bundle', '--data', 'ds', '--json');
    const m = JSON.parse(out.trim().split('\n').pop()!) as Record<string, number>;
    for (const k of ['ssiml', 'mse', 'fid', 'ssim', 'pixcorr']) expect(Number.isFinite(m[k])).toBe(true);
    expect(existsSync(join(root, 'bundle/eval-test.png'))).toBe(true);
    const bad = spawnSync('node', [cli, 'eval', '--model', 'nowhere', '--data', 'ds'], { cwd: root, encoding: 'utf8' });
    expect(bad.status).toBe(2);
    expect(bad.stderr).toMatch(/error: CC_ERR_BUNDLE: bundle .*nowhere: no manifest\.json/);
  }, 120_000);
});
