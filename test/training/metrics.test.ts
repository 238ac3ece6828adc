import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { mseMinMax, pixCorr, ssim, ssimLoss, ssimMinMax, logSsimLoss } from '../../src/training/eval/metrics/image-metrics.js';
import { frechetDistance, FidComputer, resizeBilinearTf1 } from '../../src/training/eval/metrics/fid.js';
import { buildInceptionGraph } from '../../src/training/eval/metrics/inception.js';
import { fixturesDir } from '../helpers/paths.js';
import { randn } from '../helpers/reference.js';

interface Case {
  name: string;
  height: number;
  width: number;
  x: number[];
  y: number[];
  ssim: number;
  ssim_after_minmax: number;
  ssiml_after_minmax: number;
  mse_after_minmax: number;
  pixcorr: number;
}
const fixture = JSON.parse(readFileSync(join(fixturesDir, 'ssim-reference.json'), 'utf8')) as { cases: Case[] };

describe('image metrics match scikit-image references (test/fixtures/ssim-reference.json)', () => {
  it.each(fixture.cases.map((c) => [c.name, c] as const))('%s', (_n, c) => {
    expect(Math.abs(ssim(c.x, c.y, c.height, c.width) - c.ssim)).toBeLessThan(1e-4);
    expect(Math.abs(ssimMinMax(c.x, c.y, c.height, c.width) - c.ssim_after_minmax)).toBeLessThan(1e-4);
    expect(Math.abs(ssimLoss(ssimMinMax(c.x, c.y, c.height, c.width)) - c.ssiml_after_minmax)).toBeLessThan(1e-4);
    expect(Math.abs(mseMinMax(c.x, c.y) - c.mse_after_minmax)).toBeLessThan(1e-6);
    expect(Math.abs(pixCorr(c.x, c.y) - c.pixcorr)).toBeLessThan(1e-6);
  });

  it('log-SSIM loss is 0 at SSIM 1 and grows as SSIM falls', () => {
    expect(logSsimLoss(1)).toBeCloseTo(-Math.log(1 + 1e-6), 9);
    expect(logSsimLoss(0)).toBeGreaterThan(logSsimLoss(0.5));
  });

  it('refuses images smaller than the window', () => {
    expect(() => ssim(new Array(100).fill(0), new Array(100).fill(0), 10, 10)).toThrow(/at least 11x11/);
  });
});

describe('FID', () => {
  it('Frechet distance of a set with itself is ~0 and grows with a mean shift', () => {
    const d = 8;
    const n = 50;
    const a = Float64Array.from(randn(n * d, 11));
    expect(Math.abs(frechetDistance(a, a, n, d))).toBeLessThan(1e-6);
    const b = a.map((v) => v + 1);
    expect(frechetDistance(a, b, n, d)).toBeCloseTo(d, 6);
  });

  it('TF1-style bilinear resize keeps constants and corner pixels', () => {
    const src = Float32Array.from({ length: 12 }, (_, i) => i);
    const out = resizeBilinearTf1(src, 3, 4, 6, 8);
    expect(out[0]).toBe(0);
    expect(resizeBilinearTf1(new Float32Array(12).fill(7), 3, 4, 5, 9).every((v) => Math.abs(v - 7) < 1e-6)).toBe(true);
  });

  it('builds the 64-feature InceptionV3 prefix and the full 2048-feature network from nsfwjs', () => {
    const g64 = buildInceptionGraph(64);
    expect(g64.outputs[0].shape).toEqual(['batch', 64]);
    expect(g64.nodes.filter((n) => n.opType === 'Conv')).toHaveLength(3);
    const g2048 = buildInceptionGraph(2048);
    expect(g2048.outputs[0].shape).toEqual(['batch', 2048]);
    expect(g2048.nodes.filter((n) => n.opType === 'Conv').length).toBe(94);
  });

  it('FID-64 is ~0 for identical sets and larger for noise than for a slight blur', async () => {
    const fid = await FidComputer.create(64);
    const h = 36;
    const w = 64;
    const n = 12;
    const real = new Float32Array(n * h * w);
    for (let i = 0; i < n; i++)
      for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) real[i * h * w + y * w + x] = Math.sin((x + i) / 5) * Math.cos((y * (i + 1)) / 9);
    const noisy = real.map((v, i) => v + 2 * randn(1, i + 3)[0]);
    const shifted = real.map((v, i) => real[Math.max(0, i - 1)] * 0.5 + v * 0.5);
    expect(await fid.fid(real, real, n, h, w)).toBeLessThan(1e-3);
    const fNoise = await fid.fid(real, noisy, n, h, w);
    const fBlur = await fid.fid(real, shifted, n, h, w);
    expect(fNoise).toBeGreaterThan(fBlur);
  });
});
