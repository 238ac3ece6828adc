import { join } from 'node:path';
import { columnMeanStd } from '../../common/stats.js';
import { responseScaleVector } from '../../models/bundle.js';
import { SensoriumDataset } from '../../datasets/sensorium.js';
import { openDataset } from '../../datasets/dataset-source.js';
import { histogramsSvg, reconstructionGrid, writeFile } from '../report/figures.js';

export interface InspectSummary {
  trials: Record<string, number>;
  uniqueTestImages: number;
  neurons: number;
  imageShape: [number, number];
  scaledResponseMean: number;
  scaledResponseMax: number;
  fractionZero: number;
  files: string[];
}

/**
 * A look at a dataset: a stimulus sheet (sample images of each tier) and histograms of the response
 * statistics after std scaling, computed from (at most) the first 500 train trials.
 */
export function inspectDataset(dataDir: string, outDir: string): InspectSummary {
  const ds = openDataset(dataDir);
  const [h, w] = ds.imageShape;
  const tiers = [...new Set(ds.tiers)];
  const perTier = 8;
  const rows = tiers.map((t) => {
    const idx = ds.indices(t).slice(0, perTier);
    const images = new Float32Array(perTier * h * w);
    idx.forEach((i, k) => images.set(ds.trial(i).image, k * h * w));
    return { label: t, images };
  });
  const sheet = join(outDir, 'stimulus-sheet.png');
  writeFile(sheet, reconstructionGrid(rows, perTier, h, w, { scale: 1, columns: perTier }));

  const train = ds.indices('train').slice(0, 500);
  const n = ds.neurons;
  const R = new Float32Array(train.length * n);
  train.forEach((i, k) => R.set(ds.trial(i).responses, k * n));
  const { mean, std } = columnMeanStd(R, train.length, n);
  const scale = responseScaleVector(std, 'brainreader');
  const scaled = R.map((v, i) => v * scale[i % n]);
  let zero = 0;
  let max = 0;
  let sum = 0;
  for (let i = 0; i < R.length; i++) {
    if (R[i] === 0) zero++;
    max = Math.max(max, scaled[i]);
    sum += scaled[i];
  }
  const sample = scaled.filter((_, i) => i % 7 === 0);
  const fracZeroPerNeuron = Array.from({ length: n }, (_, j) => {
    let z = 0;
    for (let k = 0; k < train.length; k++) if (R[k * n + j] === 0) z++;
    return z / train.length;
  });
  const svg = histogramsSvg(`Responses of ${n} neurons over ${train.length} train trials (std-scaled)`, [
    { label: 'std-scaled response', values: sample, log: true },
    { label: 'per-neuron mean (std-scaled)', values: Array.from(mean, (m, j) => m * scale[j]) },
    { label: 'per-neuron fraction of zero trials', values: fracZeroPerNeuron },
  ]);
  const stats = join(outDir, 'response-statistics.svg');
  writeFile(stats, svg);
  const trials: Record<string, number> = {};
  for (const t of tiers) trials[t] = ds.indices(t).length;
  return {
    trials,
    uniqueTestImages: new Set(ds.indices('test').map((i) => ds.imageIds[i])).size,
    neurons: n,
    imageShape: [h, w],
    scaledResponseMean: sum / R.length,
    scaledResponseMax: max,
    fractionZero: zero / R.length,
    files: [sheet, stats],
  };
}
