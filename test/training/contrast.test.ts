import { describe, expect, it } from 'vitest';
import { DECODER_INPUT, DECODER_OUTPUT, ridgeImage, type RidgeAnchor } from '../../src/models/architectures/ridge.js';
import { newGraph, tensor } from '../../src/models/onnx/index.js';
import { createSession, runOnce } from '../../src/models/ort.js';
import { Rng } from '../../src/models/rng.js';
import { resampleHost } from '../../src/training/latent/images.js';
import { stackReadouts, type Readout } from '../../src/training/decoders/sessions.js';
import { contrastTargets, localContrast } from '../../src/training/ridge/contrast.js';

describe('local contrast energy (the contrast read-out target)', () => {
  const H = 12;
  const W = 20;

  it('is zero on a flat image, whatever its level', () => {
    const flat = new Float32Array(2 * H * W).fill(0.7);
    flat.fill(-3, H * W);
    expect(Math.max(...localContrast(flat, 2, H, W))).toBeLessThan(1e-6);
  });

  it('peaks on an edge and falls to zero away from it, the same for either polarity', () => {
    const edge = new Float32Array(H * W);
    for (let y = 0; y < H; y++) for (let x = 10; x < W; x++) edge[y * W + x] = 1;
    const flipped = edge.map((v) => 1 - v);
    const c = localContrast(edge, 1, H, W);
    const row = Array.from(c.subarray(6 * W, 7 * W));
    const peak = row.indexOf(Math.max(...row));
    expect([9, 10]).toContain(peak);
    expect(row[0]).toBeLessThan(0.01 * row[peak]);
    expect(row[W - 1]).toBeLessThan(0.01 * row[peak]);
    const cf = localContrast(flipped, 1, H, W);
    for (let i = 0; i < c.length; i++) expect(cf[i]).toBeCloseTo(c[i], 5);
  });

  it('scales with the contrast and names a size mismatch', () => {
    const img = Float32Array.from({ length: H * W }, (_, i) => Math.sin(i * 0.7));
    const c1 = localContrast(img, 1, H, W);
    const c2 = localContrast(img.map((v) => 3 * v), 1, H, W);
    for (let i = 0; i < c1.length; i++) expect(c2[i]).toBeCloseTo(3 * c1[i], 4);
    expect(() => localContrast(img, 2, H, W)).toThrow(/2 images of 12x20/);
  });
});

describe('a coarse contrast read-out, upsampled in the graph', () => {
  it('fits to block means of the contrast maps on an (H/f) x (W/f) grid (the nearest grid where f does not divide), and refuses a divisor below 1', () => {
    const [H, W, f] = [12, 20, 4];
    const rng = new Rng(2);
    const split = (count: number) => ({ count, images: Float32Array.from({ length: count * H * W }, () => rng.normal()) });
    const data = { height: H, width: W, train: split(2), validation: split(1), test: split(1) } as unknown as Parameters<typeof contrastTargets>[0];
    const t = contrastTargets(data, { downsample: f });
    expect([t.height, t.width]).toEqual([H / f, W / f]);
    const full = localContrast(data.train.images, 2, H, W);
    // Image 1, coarse cell (1, 2): the mean of its 4 x 4 block of the full-size map.
    let block = 0;
    for (let y = 4; y < 8; y++) for (let x = 8; x < 12; x++) block += full[H * W + y * W + x] / 16;
    expect(t.train.images[(H / f) * (W / f) + 1 * (W / f) + 2]).toBeCloseTo(block, 5);
    const odd = contrastTargets(data, { downsample: 3 });
    expect([odd.height, odd.width, odd.train.images.length]).toEqual([4, 7, 2 * 4 * 7]);
    expect(() => contrastTargets(data, { downsample: 0 })).toThrow(/downsample 0 must be a whole number >= 1/);
  });

  it("the graph's coarse channel is (responses x W + b) upsampled bilinearly, and the image channel is untouched", async () => {
    const [N, H, W, f] = [7, 8, 12, 4];
    const [h, w] = [H / f, W / f];
    const rng = new Rng(3);
    const cols = H * W + h * w;
    const anchor: RidgeAnchor = { weights: Float32Array.from({ length: N * cols }, () => rng.normal()), bias: Float32Array.from({ length: cols }, () => rng.normal()), height: H, width: W, channels: 2, grids: [[H, W], [h, w]] };
    const g = newGraph('coarse_anchor');
    const x = g.input(DECODER_INPUT, 'float32', ['batch', N]);
    g.output(ridgeImage({ g, rng }, x, anchor), DECODER_OUTPUT);
    const { session } = await createSession(g);
    const B = 3;
    const r = Float32Array.from({ length: B * N }, () => rng.normal());
    const out = (await runOnce(session, { [DECODER_INPUT]: tensor('float32', [B, N], r) }))[DECODER_OUTPUT];
    expect(out.dims).toEqual([B, 2, H, W]);
    const y = out.data as Float32Array;
    let worst = 0;
    for (let b = 0; b < B; b++) {
      const lin = Float32Array.from({ length: cols }, (_, c) => anchor.bias[c] + Array.from({ length: N }, (_, n) => r[b * N + n] * anchor.weights[n * cols + c]).reduce((s, v) => s + v, 0));
      const up = resampleHost(lin.subarray(H * W), h, w, H, W);
      for (let p = 0; p < H * W; p++) {
        worst = Math.max(worst, Math.abs(y[b * 2 * H * W + p] - lin[p]));
        worst = Math.max(worst, Math.abs(y[(b * 2 + 1) * H * W + p] - up[p]));
      }
    }
    expect(worst).toBeLessThan(1e-4);
    // Bilinear: a coarse map that is flat upsamples to the same flat map.
    expect(Math.max(...resampleHost(new Float32Array(h * w).fill(2.5), h, w, H, W).map((v) => Math.abs(v - 2.5)))).toBeLessThan(1e-6);
  });

  it('training feeds the coarse out-of-fold estimates upsampled exactly as the exported graph computes the read-out', async () => {
    // Readouts whose "train estimates" are their in-sample outputs: then the fed images and the graph must agree.
    const [N, H, W, T] = [5, 8, 12, 4];
    const grids: [number, number][] = [[H, W], [2, 3]];
    const rng = new Rng(4);
    const r = Float32Array.from({ length: T * N }, () => rng.normal());
    const reads: Readout[] = grids.map(([h, w]) => {
      const n = h * w;
      const weights = Float32Array.from({ length: N * n }, () => rng.normal());
      const bias = Float32Array.from({ length: n }, () => rng.normal());
      const trainImages = Float32Array.from({ length: T * n }, (_, i) => bias[i % n] + Array.from({ length: N }, (_, k) => r[Math.floor(i / n) * N + k] * weights[k * n + (i % n)]).reduce((s, v) => s + v, 0));
      return { weights, bias, trainImages, grid: [h, w] };
    });
    const anchor = stackReadouts(reads, { height: H, width: W, neurons: N, train: { count: T } });
    expect(anchor.grids).toEqual(grids);
    const g = newGraph('fed_vs_graph');
    const x = g.input(DECODER_INPUT, 'float32', ['batch', N]);
    g.output(ridgeImage({ g, rng, mode: 'eval' }, x, anchor), DECODER_OUTPUT);
    const { session } = await createSession(g);
    const y = (await runOnce(session, { [DECODER_INPUT]: tensor('float32', [T, N], r) }))[DECODER_OUTPUT].data as Float32Array;
    expect(y.length).toBe(anchor.trainImages!.length);
    expect(Math.max(...y.map((v, i) => Math.abs(v - anchor.trainImages![i])))).toBeLessThan(1e-4);
  });

  it('upsamples a ramp to the same ramp between the coarse pixel centres (bilinear, half-pixel centres)', () => {
    const [h, w, H, W] = [3, 4, 12, 16];
    const ramp = Float32Array.from({ length: h * w }, (_, i) => i % w);
    const up = resampleHost(ramp, h, w, H, W);
    // Fine pixel x has its centre at ((x + 0.5) * w / W - 0.5) in coarse pixel units.
    for (let x = 2; x < W - 2; x++) expect(up[5 * W + x]).toBeCloseTo(((x + 0.5) * w) / W - 0.5, 5);
  });
});
