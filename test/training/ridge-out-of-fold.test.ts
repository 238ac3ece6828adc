import { describe, expect, it } from 'vitest';
import { fitRidge } from '../../src/training/ridge/ridge.js';
import type { PreparedData, PreparedSplit } from '../../src/datasets/preprocess.js';
import { Rng } from '../../src/models/rng.js';

/** A linear world: responses X (neurons), images Y = X B + noise (2 x 3 pixels). */
function linearWorld(train: number, twins: boolean, seed = 3): PreparedData {
  const rng = new Rng(seed);
  const N = 20;
  const P = 6;
  const B = Float32Array.from({ length: N * P }, () => rng.normal());
  const split = (count: number, tier: string): PreparedSplit => {
    const responses = new Float32Array(count * N);
    const images = new Float32Array(count * P);
    for (let r = 0; r < count; r++) {
      const src = twins && r % 2 === 1 ? r - 1 : r;
      for (let k = 0; k < N; k++) responses[r * N + k] = src === r ? rng.normal() : responses[src * N + k];
      for (let j = 0; j < P; j++) {
        let y = 0;
        for (let k = 0; k < N; k++) y += responses[r * N + k] * B[k * P + j];
        images[r * P + j] = src === r ? y + 2 * rng.normal() : images[src * P + j];
      }
    }
    return { tier, count, images, responses, imageIds: [...Array(count).keys()], trials: [...Array(count).keys()].map((i) => [i]) };
  };
  return { neurons: N, height: 2, width: 3, train: split(train, 'train'), validation: split(30, 'validation'), test: split(10, 'test') } as unknown as PreparedData;
}

/** Kernel ridge on the kept rows, by Gaussian elimination in float64: what each fold's estimate must be. */
function naiveFoldEstimate(data: PreparedData, lambda: number, held: number[], kept: number[]): number[][] {
  const { neurons: N, train } = data;
  const P = data.height * data.width;
  const n = train.count;
  const mean = (m: Float32Array, cols: number, c: number): number => {
    let s = 0;
    for (let r = 0; r < n; r++) s += m[r * cols + c];
    return s / n;
  };
  const mx = Array.from({ length: N }, (_, c) => mean(train.responses, N, c));
  const my = Array.from({ length: P }, (_, c) => mean(train.images, P, c));
  const x = (r: number, k: number): number => train.responses[r * N + k] - mx[k];
  const dot = (a: number, b: number): number => Array.from({ length: N }, (_, k) => x(a, k) * x(b, k)).reduce((s, v) => s + v, 0);
  const t = kept.length;
  const A = kept.map((a, i) => [...kept.map((b, j) => dot(a, b) + (i === j ? lambda : 0)), ...Array.from({ length: P }, (_, c) => train.images[a * P + c] - my[c])]);
  for (let i = 0; i < t; i++) {
    for (let r = i + 1; r < t; r++) {
      const f = A[r][i] / A[i][i];
      for (let c = i; c < t + P; c++) A[r][c] -= f * A[i][c];
    }
  }
  const coef = Array.from({ length: t }, () => new Array<number>(P).fill(0));
  for (let i = t - 1; i >= 0; i--)
    for (let c = 0; c < P; c++) {
      let s = A[i][t + c];
      for (let j = i + 1; j < t; j++) s -= A[i][j] * coef[j][c];
      coef[i][c] = s / A[i][i];
    }
  return held.map((h) => Array.from({ length: P }, (_, c) => my[c] + kept.reduce((s, k, j) => s + dot(h, k) * coef[j][c], 0)));
}

const mse = (a: Float32Array, b: Float32Array): number => a.reduce((s, v, i) => s + (v - b[i]) ** 2, 0) / a.length;

describe('ridge out-of-fold train estimates (what the ridge-anchored decoders train on)', () => {
  it.each([
    ['more trials than neurons (folds solved in the neurons\' space)', 45],
    ['fewer trials than neurons (folds cut from the kernel)', 15],
  ])('each fold is predicted by the ridge fitted on the other folds: %s equals a direct solve', async (_, trials) => {
    const data = linearWorld(trials, false);
    const fit = await fitRidge(data, { outOfFold: { folds: 3 } });
    const P = 6;
    for (let f = 0; f < 3; f++) {
      const held = [...Array(trials).keys()].filter((i) => i % 3 === f);
      const kept = [...Array(trials).keys()].filter((i) => i % 3 !== f);
      const want = naiveFoldEstimate(data, fit.lambda, held, kept);
      held.forEach((row, a) => want[a].forEach((v, c) => expect(fit.trainOutOfFold![row * P + c]).toBeCloseTo(v, 3)));
    }
    if (trials < data.neurons) return;
    // Held-out estimates miss by more than in-sample ones: that gap is why decoders train on them.
    const inSample = new Float32Array(trials * P);
    for (let r = 0; r < trials; r++)
      for (let c = 0; c < P; c++) {
        let s = fit.bias[c];
        for (let k = 0; k < data.neurons; k++) s += data.train.responses[r * data.neurons + k] * fit.weights[k * P + c];
        inSample[r * P + c] = s;
      }
    expect(mse(fit.trainOutOfFold!, data.train.images)).toBeGreaterThan(mse(inSample, data.train.images));
  });

  it('groups stay in one fold: a trial whose twin sits in another fold is not predicted from it', async () => {
    const data = linearWorld(60, true);
    const twins = [...Array(60).keys()].map((i) => Math.floor(i / 2));
    const byRow = await fitRidge(data, { outOfFold: { folds: 2 } });
    const byGroup = await fitRidge(data, { outOfFold: { folds: 2, groups: twins } });
    const leaky = mse(byRow.trainOutOfFold!, data.train.images);
    const honest = mse(byGroup.trainOutOfFold!, data.train.images);
    expect(honest).toBeGreaterThan(1.2 * leaky);
    await expect(fitRidge(data, { outOfFold: { folds: 2, groups: [1, 2] } })).rejects.toThrow(/2 groups for 60 train trials/);
    await expect(fitRidge(data, { outOfFold: { folds: 4, groups: new Array(60).fill(7) } })).rejects.toThrow(/over 1 stimulus groups/);
  });
});
