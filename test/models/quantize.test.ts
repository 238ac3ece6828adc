import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { buildRidgeGraph } from '../../src/models/architectures/ridge.js';
import { loadBundle } from '../../src/models/bundle.js';
import { readModel, tensor, writeModel } from '../../src/models/onnx/index.js';
import { createSession, runOnce } from '../../src/models/ort.js';
import { quantizeModel } from '../../src/models/quantize.js';
import { Rng } from '../../src/models/rng.js';
import { quantizeBundle } from '../../src/training/eval/quantize-bundle.js';
import { evaluateBundle } from '../../src/training/eval/evaluate.js';
import { trainRidge } from '../../src/training/ridge/train-ridge.js';
import { onnxCheck } from '../helpers/onnx-check.js';
import { tinyDataset } from '../helpers/tiny-dataset.js';

const quiet = (): void => undefined;
const N = 300;

async function decode(model: Uint8Array, x: Float32Array, rows: number): Promise<Float32Array> {
  const { session } = await createSession(model);
  return (await runOnce(session, { responses: tensor('float32', [rows, N], x) })).image.data as Float32Array;
}

describe('int8 quantization of decoder graphs', () => {
  const rng = new Rng(5);
  const weights = Float32Array.from({ length: N * 2304 }, () => rng.normal() * 0.05);
  const float = writeModel(buildRidgeGraph(weights, new Float32Array(2304).fill(0.1), N, 36, 64));
  const x = Float32Array.from({ length: 3 * N }, () => Math.max(0, rng.normal()));

  it('MatMul weights become int8 (a quarter of the bytes), outputs stay close, and each frame decodes alone', async () => {
    const q = quantizeModel(float);
    expect(q.quantized).toEqual([{ name: 'ridge/weight', elements: N * 2304 }]);
    const g = readModel(q.model).graph;
    expect(g.initializers.has('ridge/weight')).toBe(false);
    expect(g.nodes.map((n) => n.opType)).toContain('MatMulInteger');
    expect(q.model.length).toBeLessThan(0.3 * float.length);
    const [a, b] = [await decode(float, x, 3), await decode(q.model, x, 3)];
    let err = 0;
    let scale = 0;
    for (let i = 0; i < a.length; i++) {
      err = Math.max(err, Math.abs(a[i] - b[i]));
      scale = Math.max(scale, Math.abs(a[i] - 0.1));
    }
    expect(err).toBeGreaterThan(0); // it really is a different (integer) computation
    expect(err / scale).toBeLessThan(0.02);
    // Per-frame activation scales: a frame's image does not depend on what it was batched with.
    const alone = await decode(q.model, x.subarray(N, 2 * N), 1);
    expect(Array.from(alone)).toEqual(Array.from(b.subarray(2304, 2 * 2304)));
    const zeros = await decode(q.model, new Float32Array(N), 1);
    expect(zeros.every((v) => Math.abs(v - 0.1) < 1e-6)).toBe(true);
    const file = join(mkdtempSync(join(tmpdir(), 'cc-q-')), 'q.onnx');
    writeFileSync(file, q.model);
    const checked = onnxCheck(file);
    if (checked !== undefined) expect(checked).toBe('ok 17');
  });

  it('leaves graphs without a large constant MatMul weight alone', () => {
    expect(quantizeModel(float, { minWeights: N * 2304 + 1 }).quantized).toEqual([]);
  });
});

describe('cortexcast quantize (bundles, tiny preset)', () => {
  let data: string;
  let work: string;
  beforeAll(async () => {
    data = await tinyDataset();
    work = mkdtempSync(join(tmpdir(), 'cc-qb-'));
    await trainRidge({ data, out: join(work, 'ridge'), quiet: true, log: quiet });
  }, 120_000);

  it('writes an int8 bundle whose manifest records precision and the validation change, within the bound', async () => {
    const out = join(work, 'ridge-int8');
    const m = await quantizeBundle({ model: join(work, 'ridge'), out, data, log: quiet });
    expect(m.name).toMatch(/-int8$/);
    expect(m.precision).toMatchObject({ weights: 'int8', activations: 'int8-per-frame', quantized: [{ name: 'ridge/weight' }], validation: { maxSsimDrop: 0.005 } });
    const v = m.precision!.validation;
    expect(v.float.ssim - v.quantized.ssim).toBeLessThan(0.005);
    expect(Math.abs(v.float.mse - v.quantized.mse)).toBeLessThan(0.1 * v.float.mse);
    // The recorded figures are what evaluating the bundle gives.
    const ev = await evaluateBundle(out, data, { tier: 'validation', fid: 0 });
    expect(ev.metrics.ssim).toBeCloseTo(v.quantized.ssim, 9);
    expect(loadBundle(out).manifest.precision!.source.sha256).toBe(loadBundle(join(work, 'ridge')).manifest.onnx.sha256);
  }, 120_000);

  it('refuses what it should, naming why, and leaves nothing behind', async () => {
    const refused = join(work, 'refused');
    await expect(quantizeBundle({ model: join(work, 'ridge'), out: refused, data, maxSsimDrop: -1, log: quiet })).rejects.toThrow(/CC_ERR_QUANTIZE: .*validation SSIM fell by .* over the bound -1/);
    expect(existsSync(refused)).toBe(false);
    await expect(quantizeBundle({ model: join(work, 'ridge-int8'), out: join(work, 'again'), data, log: quiet })).rejects.toThrow(/already quantized/);
    await expect(quantizeBundle({ model: join(work, 'ridge'), out: join(work, 'ridge-int8'), data, log: quiet })).rejects.toThrow(/exists and is not empty/);
    await expect(quantizeBundle({ model: join(work, 'ridge'), out: join(work, 'big'), data, minWeights: 1e9, log: quiet })).rejects.toThrow(/nothing would change/);
  }, 120_000);
});
