import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { Rng } from '../../src/models/rng.js';
import { attachRidgeAnchors, DecoderBatch, openSessions } from '../../src/training/decoders/sessions.js';
import { trainDecoder } from '../../src/training/decoders/train-decoder.js';
import { tinyDataset } from '../helpers/tiny-dataset.js';

describe('response-noise augmentation', () => {
  it('adds noise to the responses and moves the fed ridge images by its read-out', async () => {
    const data = await tinyDataset({ trainTrials: 60, validationTrials: 12 }, 40);
    const sessions = openSessions([data], mkdtempSync(join(tmpdir(), 'cc-noise-')), { transform: 'none', quiet: true });
    await attachRidgeAnchors(sessions, 3, undefined, { contrast: true, contrastDownsample: 4 });
    const names = { anchor_0: 'anchor_image' };
    const rows = [[0, 5, 9, 20]];
    const clean = await DecoderBatch.create(sessions, 4, names);
    const noisy = await DecoderBatch.create(sessions, 4, names, undefined, 0.7);
    const c = await clean.fill(rows, new Rng(1));
    const n = await noisy.fill(rows, new Rng(1));
    const N = 40;
    const { height: H, width: W } = sessions[0].data;
    const P = H * W;
    const anchor = sessions[0].anchor!;
    const cols = anchor.weights.length / N;
    const e = Float32Array.from(n.responses.data as Float32Array, (v, i) => v - (c.responses.data as Float32Array)[i]);
    // The noise has the asked-for spread.
    const sd = Math.sqrt(e.reduce((s, v) => s + v * v, 0) / e.length);
    expect(sd).toBeGreaterThan(0.55);
    expect(sd).toBeLessThan(0.85);
    // The image channel of the fed ridge image moved by exactly e W (its full-size columns come first).
    const [fc, fn] = [c.anchor_image.data as Float32Array, n.anchor_image.data as Float32Array];
    for (let r = 0; r < 4; r++)
      for (const p of [0, 17, P - 1]) {
        let want = 0;
        for (let i = 0; i < N; i++) want += e[r * N + i] * anchor.weights[i * cols + p];
        expect(fn[(r * 2 + 0) * P + p] - fc[(r * 2 + 0) * P + p]).toBeCloseTo(want, 3);
      }
    // The contrast channel moved too; the targets did not.
    let moved = 0;
    for (let r = 0; r < 4; r++) for (let p = 0; p < P; p++) moved += Math.abs(fn[(r * 2 + 1) * P + p] - fc[(r * 2 + 1) * P + p]);
    expect(moved).toBeGreaterThan(0);
    expect(Array.from(n.target.data as Float32Array)).toEqual(Array.from(c.target.data as Float32Array));
  }, 60_000);

  it('is recorded in the run config and refused out of range', async () => {
    const data = await tinyDataset();
    const out = join(mkdtempSync(join(tmpdir(), 'cc-noise-run-')), 'cnn');
    const r = await trainDecoder({ kind: 'cnn', data, out, maxSteps: 2, responseNoise: 0.5, quiet: true, log: () => undefined });
    expect(r.manifest.training.config).toMatchObject({ responseNoise: 0.5 });
    await expect(trainDecoder({ kind: 'cnn', data, out: join(out, 'x'), maxSteps: 1, responseNoise: -1, quiet: true, log: () => undefined })).rejects.toThrow(/response noise -1 must be between 0 and 10/);
  }, 120_000);
});
