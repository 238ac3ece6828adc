import { DEFAULT_PREPROCESS, prepareDataset, type PreparedData } from '../../datasets/preprocess.js';
import { SensoriumDataset } from '../../datasets/sensorium.js';
import { openDataset } from '../../datasets/dataset-source.js';
import { cholesky, choleskySolve, Gemm } from '../engine/linalg.js';
import { extractFeatureLayers, FEATURE_INPUT, FEATURE_LAYERS, type Features } from './feature-network.js';

/**
 * Which MobileNetV2 layer to use as the feature-space latent, chosen the way the report's source
 * chose ResNet50's layer3.0.downsample.0 (brain alignment): for each candidate layer, a ridge from
 * the layer's features of the stimuli to the recorded responses, fitted on the train tier, scored by
 * the mean per-neuron Pearson correlation on the validation tier. The layer whose features predict
 * V1 best is the one whose space the responses can most easily be mapped into.
 *
 * The ridge is fitted in kernel form: features (up to 55k dims) far outnumber train trials (4,500),
 * so the n x n Gram matrix of centred features is the cheap object, and for validation predictions
 * only K_vt (K_tt + lambda I)^-1 is needed, a solve with as many right-hand sides as validation
 * trials rather than neurons. lambda = alpha * mean(diag K_tt), as the project's pixel ridge scales
 * it, so one alpha grid suits layers of any size. Alpha is picked per layer on validation
 * correlation, the same trials the table reports: all layers get the same (small) optimism.
 */

export interface LayerScore {
  layer: string;
  stride: number;
  channels: number;
  height: number;
  width: number;
  /** channels * height * width: the ridge's input dimension. */
  dims: number;
  /** Chosen regularisation, as a multiple of mean(diag(Gram)). */
  alpha: number;
  /** Mean over neurons of the validation-tier Pearson correlation (predicted vs recorded). */
  correlation: number;
  /** Validation correlation at every alpha tried. */
  path: { alpha: number; correlation: number }[];
}

export interface LayerTable {
  /** One row per candidate, in depth order. */
  rows: LayerScore[];
  best: LayerScore;
  /** The same ridge on the decoder's own z-scored pixels: what any layer must beat to add anything. */
  pixels: LayerScore;
  input: { height: number; width: number };
  trainTrials: number;
  validationTrials: number;
  neurons: number;
  seconds: { features: number; ridge: number; total: number };
}

export interface LayerTableOptions {
  /** Candidate layer names (default FEATURE_LAYERS), scored in the order given by network depth. */
  layers?: readonly string[];
  alphas?: readonly number[];
  inputHeight?: number;
  inputWidth?: number;
  threads?: number;
  /**
   * Features of all candidates for all stimuli do not fit comfortably at once (8 layers x 5,000
   * stimuli is ~2.8 GB); layers are extracted in groups under this many bytes, one network pass each.
   */
  maxFeatureBytes?: number;
  cacheDir?: string;
  log?: (line: string) => void;
}

export const LAYER_TABLE_ALPHAS: readonly number[] = Object.freeze([0.1, 0.3, 1, 3, 10, 30, 100]);

/** Z-scored stimuli back to grey levels in [0, 1] (raw SENSORIUM pixels are 0..255). */
export function greyLevels(data: PreparedData, images: Float32Array): Float32Array {
  const { imageMean, imageStd } = data.prep;
  return Float32Array.from(images, (z) => Math.min(1, Math.max(0, (z * imageStd + imageMean) / 255)));
}

/** The table for every candidate layer (see the file comment), plus the pixel baseline. */
export async function featureLayerTable(data: PreparedData, o: LayerTableOptions = {}): Promise<LayerTable> {
  const t0 = Date.now();
  const log = o.log ?? (() => undefined);
  const alphas = o.alphas ?? LAYER_TABLE_ALPHAS;
  const depth = new Map(FEATURE_LAYERS.map((l, i) => [l.name, i]));
  const names = [...(o.layers ?? FEATURE_LAYERS.map((l) => l.name))];
  const unknown = names.filter((n) => !depth.has(n));
  if (unknown.length) throw new RangeError(`featureLayerTable: ${unknown.join(', ')} not among the candidate layers (${[...depth.keys()].join(', ')})`);
  names.sort((a, b) => depth.get(a)! - depth.get(b)!);
  const input = { height: o.inputHeight ?? FEATURE_INPUT.height, width: o.inputWidth ?? FEATURE_INPUT.width };
  const { train, validation } = data;
  const nt = train.count;
  const nv = validation.count;
  const n = nt + nv;
  const N = data.neurons;
  const H = data.height;
  const W = data.width;
  if (nt < 2 || nv < 2) throw new RangeError(`featureLayerTable: needs at least 2 train and 2 validation trials (has ${nt}, ${nv})`);

  // Train rows first, then validation: the kernel's columns are the train rows.
  const grey = new Float32Array(n * H * W);
  grey.set(greyLevels(data, train.images), 0);
  grey.set(greyLevels(data, validation.images), nt * H * W);
  const meanY = new Float64Array(N);
  for (let r = 0; r < nt; r++) for (let j = 0; j < N; j++) meanY[j] += train.responses[r * N + j] / nt;
  const Yt = Float32Array.from(train.responses, (v, i) => v - meanY[i % N]);
  const gemm = await Gemm.create();
  const score = async (X: Float32Array, d: number): Promise<{ alpha: number; correlation: number; path: LayerScore['path'] }> => {
    const K = await centredKernel(gemm, X, n, nt, d);
    return ridgeCorrelation(gemm, K, nt, nv, Yt, validation.responses, N, alphas);
  };

  let featureSeconds = 0;
  let ridgeSeconds = 0;
  const rows: LayerScore[] = [];
  const budget = o.maxFeatureBytes ?? 1.5e9;
  const bytesOf = (name: string): number => {
    const l = FEATURE_LAYERS[depth.get(name)!];
    return 4 * n * l.channels * Math.ceil(input.height / l.stride) * Math.ceil(input.width / l.stride);
  };
  const groups: string[][] = [];
  for (const name of names) {
    const g = groups[groups.length - 1];
    if (g && g.reduce((s, x) => s + bytesOf(x), 0) + bytesOf(name) <= budget) g.push(name);
    else groups.push([name]);
  }
  for (const group of groups) {
    const tf = Date.now();
    const feats: Map<string, Features> = await extractFeatureLayers(grey, n, H, W, group, { inputHeight: input.height, inputWidth: input.width, threads: o.threads, cacheDir: o.cacheDir });
    featureSeconds += (Date.now() - tf) / 1000;
    log(`layer table: features of ${n} stimuli for ${group.join(', ')} in ${((Date.now() - tf) / 1000).toFixed(1)} s`);
    for (const name of group) {
      const f = feats.get(name)!;
      const [c, h, w] = f.shape;
      const tr = Date.now();
      const s = await score(f.features, c * h * w);
      feats.delete(name);
      ridgeSeconds += (Date.now() - tr) / 1000;
      const row: LayerScore = { layer: name, stride: FEATURE_LAYERS[depth.get(name)!].stride, channels: c, height: h, width: w, dims: c * h * w, ...s };
      log(`layer table: ${name} ${c}x${h}x${w} -> correlation ${s.correlation.toFixed(4)} (alpha ${s.alpha}) in ${((Date.now() - tr) / 1000).toFixed(1)} s${edgeNote(s.alpha, alphas)}`);
      rows.push(row);
    }
  }
  const tp = Date.now();
  const pixelX = new Float32Array(n * H * W);
  pixelX.set(train.images, 0);
  pixelX.set(validation.images, nt * H * W);
  const ps = await score(pixelX, H * W);
  ridgeSeconds += (Date.now() - tp) / 1000;
  const pixels: LayerScore = { layer: `pixels ${H}x${W}`, stride: input.height / H, channels: 1, height: H, width: W, dims: H * W, ...ps };
  log(`layer table: pixels -> correlation ${ps.correlation.toFixed(4)} (alpha ${ps.alpha})${edgeNote(ps.alpha, alphas)}`);
  const best = rows.reduce((a, b) => (b.correlation > a.correlation ? b : a));
  return { rows, best, pixels, input, trainTrials: nt, validationTrials: nv, neurons: N, seconds: { features: featureSeconds, ridge: ridgeSeconds, total: (Date.now() - t0) / 1000 } };
}

const edgeNote = (alpha: number, alphas: readonly number[]): string =>
  alpha === Math.min(...alphas) || alpha === Math.max(...alphas) ? ' (at the edge of the alpha grid)' : '';

/** Open a SENSORIUM-layout folder, prepare it as every decoder does, and make its table. */
export async function layerTableForDataset(dir: string, o: LayerTableOptions & { quiet?: boolean } = {}): Promise<LayerTable> {
  const data = prepareDataset(openDataset(dir), DEFAULT_PREPROCESS, { quiet: o.quiet ?? true });
  return featureLayerTable(data, o);
}

/**
 * Centred Gram matrix K = (X - mu)(X_t - mu)^T of all rows against the train rows, [n, nTrain]
 * (mu = train-row mean). Centring the features before the products (not K afterwards) keeps float32
 * GEMMs accurate when the features' means dwarf their spread. Columns go through in chunks so the
 * centred copy stays small.
 */
async function centredKernel(gemm: Gemm, X: Float32Array, n: number, nTrain: number, d: number): Promise<Float64Array> {
  const mean = new Float64Array(d);
  for (let r = 0; r < nTrain; r++) for (let c = 0; c < d; c++) mean[c] += X[r * d + c];
  for (let c = 0; c < d; c++) mean[c] /= nTrain;
  const K = new Float64Array(n * nTrain);
  const chunk = Math.max(1, Math.min(d, Math.floor(2 ** 25 / n)));
  for (let c0 = 0; c0 < d; c0 += chunk) {
    const dc = Math.min(chunk, d - c0);
    const A = new Float32Array(n * dc);
    for (let r = 0; r < n; r++) for (let j = 0; j < dc; j++) A[r * dc + j] = X[r * d + c0 + j] - mean[c0 + j];
    const part = await gemm.mul(A, A.slice(0, nTrain * dc), n, dc, nTrain, false, true);
    for (let i = 0; i < K.length; i++) K[i] += part[i];
  }
  return K;
}

/**
 * Validation correlation of the kernel ridge at each alpha: predictions K_vt (K_tt + lambda I)^-1
 * Y_t, with Y_t centred on its train mean (the intercept; Pearson ignores the constant added back).
 */
async function ridgeCorrelation(
  gemm: Gemm,
  K: Float64Array,
  nt: number,
  nv: number,
  Yt: Float32Array,
  Yv: Float32Array,
  N: number,
  alphas: readonly number[],
): Promise<{ alpha: number; correlation: number; path: LayerScore['path'] }> {
  let diag = 0;
  for (let i = 0; i < nt; i++) diag += K[i * nt + i] / nt;
  // (K_vt)^T, [nt, nv]: the right-hand sides of the solve.
  const kvtT = new Float64Array(nt * nv);
  for (let v = 0; v < nv; v++) for (let t = 0; t < nt; t++) kvtT[t * nv + v] = K[(nt + v) * nt + t];
  const path: LayerScore['path'] = [];
  for (const alpha of alphas) {
    const g = K.slice(0, nt * nt);
    const lambda = alpha * diag;
    for (let i = 0; i < nt; i++) g[i * nt + i] += lambda;
    const coef = await choleskySolve(gemm, await cholesky(gemm, g, nt), kvtT, nt, nv);
    const pred = await gemm.mul(Float32Array.from(coef), Yt, nv, nt, N, true, false);
    path.push({ alpha, correlation: meanPearson(pred, Yv, nv, N) });
  }
  const best = path.reduce((a, b) => (b.correlation > a.correlation ? b : a));
  return { alpha: best.alpha, correlation: best.correlation, path };
}

/** Mean over columns of the Pearson correlation between a and b ([rows, cols]); a constant column counts 0. */
export function meanPearson(a: ArrayLike<number>, b: ArrayLike<number>, rows: number, cols: number): number {
  const sa = new Float64Array(cols);
  const sb = new Float64Array(cols);
  for (let r = 0; r < rows; r++)
    for (let c = 0; c < cols; c++) {
      sa[c] += a[r * cols + c];
      sb[c] += b[r * cols + c];
    }
  const ab = new Float64Array(cols);
  const aa = new Float64Array(cols);
  const bb = new Float64Array(cols);
  for (let r = 0; r < rows; r++)
    for (let c = 0; c < cols; c++) {
      const x = a[r * cols + c] - sa[c] / rows;
      const y = b[r * cols + c] - sb[c] / rows;
      ab[c] += x * y;
      aa[c] += x * x;
      bb[c] += y * y;
    }
  let sum = 0;
  for (let c = 0; c < cols; c++) sum += aa[c] > 0 && bb[c] > 0 ? ab[c] / Math.sqrt(aa[c] * bb[c]) : 0;
  return sum / cols;
}

/** The table as aligned text: one row per layer in depth order, the best marked, the pixel baseline last. */
export function formatLayerTable(rows: readonly LayerScore[], o: { pixels?: LayerScore } = {}): string {
  const best = rows.reduce<LayerScore | undefined>((a, b) => (!a || b.correlation > a.correlation ? b : a), undefined);
  const header = ['layer', 'stride', 'channels', 'map', 'dims', 'alpha', 'val corr', ''];
  const line = (r: LayerScore): string[] => [
    r.layer,
    String(r.stride),
    String(r.channels),
    `${r.height}x${r.width}`,
    String(r.dims),
    String(r.alpha),
    r.correlation.toFixed(4),
    r === best ? '<- best' : '',
  ];
  const body = rows.map(line);
  const all = [header, ...body, ...(o.pixels ? [line(o.pixels)] : [])];
  const width = header.map((_, k) => Math.max(...all.map((r) => r[k].length)));
  const right = new Set([1, 2, 4, 5, 6]);
  const fmt = (r: string[]): string =>
    r
      .map((cell, k) => (right.has(k) ? cell.padStart(width[k]) : cell.padEnd(width[k])))
      .join('  ')
      .trimEnd();
  const rule = '-'.repeat(width.reduce((s, x) => s + x + 2, -2));
  return [fmt(header), rule, ...body.map(fmt), ...(o.pixels ? [rule, fmt(line(o.pixels))] : [])].join('\n');
}
