import { createRequire } from 'node:module';
import { beforeAll, describe, expect, it } from 'vitest';
import { tensor } from '../../src/models/onnx/index.js';
import { createSession, runOnce } from '../../src/models/ort.js';
import { depthwiseKernelToOnnx, samePads } from '../../src/training/eval/metrics/keras-nsfwjs.js';
import { buildFeatureGraph, extractFeatures, FEATURE_INPUT, FEATURE_LAYERS, resizeBilinear } from '../../src/training/latent/feature-network.js';
import { featureLayerTable, formatLayerTable, meanPearson, type LayerTable } from '../../src/training/latent/layer-selection.js';
import { DEFAULT_PREPROCESS, prepareDataset, type PreparedData } from '../../src/datasets/preprocess.js';
import { SensoriumDataset } from '../../src/datasets/sensorium.js';
import { tinyDataset } from '../helpers/tiny-dataset.js';

/**
 * Two deterministic grey test images (smooth gratings with a sign-flipped corner, so borders and
 * both halves carry structure), the same formula the TF.js reference ran on (as R = G = B).
 */
const probe = (k: number, y: number, x: number, H: number, W: number): number =>
  0.5 + 0.45 * Math.sin(((0.9 + k) * 11 * x) / W + (7 * y) / H) * Math.cos((5 * x) / W - ((1.3 + 0.4 * k) * 9 * y) / H) * (x > W * 0.6 && y < H * 0.4 ? -1 : 1);
const probes = (H: number, W: number): Float32Array => {
  const d = new Float32Array(2 * H * W);
  for (let k = 0; k < 2; k++) for (let y = 0; y < H; y++) for (let x = 0; x < W; x++) d[(k * H + y) * W + x] = probe(k, y, x, H, W);
  return d;
};

type Point = [number | [number, number, number, number], number];
interface Golden {
  dims: number[];
  points: Point[];
  mean?: number;
  meanAbs?: number;
  lastRowMean?: number;
  lastColMean?: number;
}

/**
 * Outputs of nsfwjs's MobileNetV2 run by TF.js 4.22.0 (@tensorflow/tfjs, CPU backend) on `probes`:
 * the model's own topology and weights (tf.io.decodeWeights dequantises them), classifier outputs at
 * 224x224, feature maps at 144x256 (the topology's batch_input_shape changed to 144x256 and cut at
 * the layer, as the live check below does), NCHW. Points are [index] or [[image, channel, y, x]].
 * Regenerate with the live check (CORTEXCAST_TFJS_DIR pointing at a folder where
 * `npm install @tensorflow/tfjs@4` was run); it compares every element, not only these.
 */
const TFJS_REFERENCE: Record<string, Golden> = {
  dense_2: { dims: [2, 128], points: [[0, 1.250606], [17, 0], [45, 0], [63, 0], [64, 0.6170795], [100, 0], [127, 0.2500167], [159, 0.3100807], [218, 0], [255, 0.2982389]] },
  dense_3: { dims: [2, 5], points: [[0, 0.04175566], [1, 0.001728793], [2, 0.9530675], [3, 0.003242336], [4, 0.0002056895], [5, 0.02405433], [6, 0.0002010692], [7, 0.9755049], [8, 0.0002272455], [9, 1.238461e-5]] },
  block_2_add: {
    dims: [2, 24, 36, 64],
    points: [[[0, 0, 0, 0], 5.635128], [[0, 1, 0, 63], 0.04604435], [[0, 2, 35, 0], 5.494992], [[0, 3, 35, 63], 7.055931], [[1, 23, 35, 63], 11.64127], [[1, 12, 18, 32], -0.7199225], [[1, 5, 0, 21], 12.10943], [[0, 22, 12, 63], -4.306756]],
    mean: 0.4030381,
    meanAbs: 3.459705,
    lastRowMean: 1.127287,
    lastColMean: 0.872037,
  },
  block_5_add: {
    dims: [2, 32, 18, 32],
    points: [[[0, 0, 0, 0], 8.16395], [[0, 1, 0, 31], -3.178552], [[0, 2, 17, 0], -2.664101], [[0, 3, 17, 31], 3.813823], [[1, 31, 17, 31], 4.27298], [[1, 16, 9, 16], 14.54702], [[1, 5, 0, 10], -8.692898], [[0, 30, 6, 31], -2.88562]],
    mean: 1.758351,
    meanAbs: 5.291579,
    lastRowMean: 0.8973901,
    lastColMean: 1.094106,
  },
  block_12_add: {
    dims: [2, 96, 9, 16],
    points: [[[0, 0, 0, 0], 1.184421], [[0, 1, 0, 15], -0.7383037], [[0, 2, 8, 0], 2.512399], [[0, 3, 8, 15], 7.244277], [[1, 95, 8, 15], 6.013465], [[1, 48, 4, 8], -0.9364898], [[1, 5, 0, 5], -0.3290616], [[0, 94, 3, 15], -8.181762]],
    mean: -0.06244505,
    meanAbs: 3.033285,
    lastRowMean: 0.002203657,
    lastColMean: 0.1086642,
  },
  block_16_project_BN: {
    dims: [2, 320, 4, 8],
    points: [[[0, 0, 0, 0], -0.08907192], [[0, 1, 0, 7], 0.2303311], [[0, 2, 3, 0], -1.06705], [[0, 3, 3, 7], -2.048355], [[1, 319, 3, 7], -0.1790001], [[1, 160, 2, 4], 2.854944], [[1, 5, 0, 2], 0.8422098], [[0, 318, 1, 7], -0.9377353]],
    mean: 0.07067423,
    meanAbs: 1.301159,
    lastRowMean: -0.02037003,
    lastColMean: 0.04407103,
  },
};
const CLASSIFIER_LAYERS = ['dense_2', 'dense_3'];
const MAP_LAYERS = ['block_2_add', 'block_5_add', 'block_12_add', 'block_16_project_BN'];

async function runConverted(layers: string[], H: number, W: number): Promise<Record<string, { dims: readonly number[]; data: Float32Array }>> {
  const { session } = await createSession(buildFeatureGraph(layers, { height: H, width: W }), { intraOpThreads: 2 });
  const out = await runOnce(session, { image: tensor('float32', [2, 1, H, W], probes(H, W)) });
  await session.release();
  return Object.fromEntries(layers.map((l) => [l, { dims: out[l].dims, data: out[l].data as Float32Array }]));
}

describe('MobileNetV2 (nsfwjs) converted to ONNX', () => {
  let converted: Record<string, { dims: readonly number[]; data: Float32Array }>;
  beforeAll(async () => {
    converted = { ...(await runConverted(CLASSIFIER_LAYERS, 224, 224)), ...(await runConverted(MAP_LAYERS, 144, 256)) };
  });

  it.each([...CLASSIFIER_LAYERS, ...MAP_LAYERS])('%s matches TF.js running the original model (1e-3)', (layer) => {
    const ref = TFJS_REFERENCE[layer];
    const got = converted[layer];
    expect(got.dims).toEqual(ref.dims);
    const [, C, h, w] = got.dims;
    const at = (p: Point[0]): number => (typeof p === 'number' ? p : ((p[0] * C + p[1]) * h + p[2]) * w + p[3]);
    for (const [p, v] of ref.points) expect(Math.abs(got.data[at(p)] - v), `${layer} at ${JSON.stringify(p)}`).toBeLessThan(1e-3);
    if (ref.mean === undefined) return;
    let mean = 0;
    let meanAbs = 0;
    let lastRow = 0;
    let lastCol = 0;
    const B = got.dims[0];
    for (const v of got.data) {
      mean += v / got.data.length;
      meanAbs += Math.abs(v) / got.data.length;
    }
    for (let b = 0; b < B; b++)
      for (let c = 0; c < C; c++) {
        for (let x = 0; x < w; x++) lastRow += got.data[at([b, c, h - 1, x])] / (B * C * w);
        for (let y = 0; y < h; y++) lastCol += got.data[at([b, c, y, w - 1])] / (B * C * h);
      }
    // The last row and column are where TF's asymmetric (end-only) stride-2 padding shows.
    expect(Math.abs(mean - ref.mean)).toBeLessThan(1e-4);
    expect(Math.abs(meanAbs - ref.meanAbs!)).toBeLessThan(1e-4);
    expect(Math.abs(lastRow - ref.lastRowMean!)).toBeLessThan(1e-4);
    expect(Math.abs(lastCol - ref.lastColMean!)).toBeLessThan(1e-4);
  });

  it('classifier probabilities sum to 1 per image', () => {
    const p = converted.dense_3.data;
    for (let b = 0; b < 2; b++) expect(p.slice(b * 5, b * 5 + 5).reduce((s, v) => s + v, 0)).toBeCloseTo(1, 5);
  });

  it('each candidate layer has its listed channels and stride at 144x256', () => {
    const g = buildFeatureGraph(FEATURE_LAYERS.map((l) => l.name), FEATURE_INPUT);
    for (const l of FEATURE_LAYERS) {
      const out = g.outputs.find((o) => o.name === l.name)!;
      // Stride-32 maps are 4x8: the stored ZeroPadding2D pads the 9-row map to 10, not 11.
      const h = l.stride === 32 ? 4 : FEATURE_INPUT.height / l.stride;
      expect(out.shape.slice(1), l.name).toEqual([l.channels, h, FEATURE_INPUT.width / l.stride]);
    }
    expect(() => buildFeatureGraph(['block_99_add'], FEATURE_INPUT)).toThrow(/no layer block_99_add/);
  });

  it('extractFeatures upsamples to the input size and returns one NCHW row per image', async () => {
    const small = probes(36, 64);
    const f = await extractFeatures(small, 2, 36, 64, 'block_12_add', { threads: 2 });
    expect(f.shape).toEqual([96, 9, 16]);
    expect(f.features.length).toBe(2 * 96 * 9 * 16);
    const up = new Float32Array(2 * 144 * 256);
    for (let i = 0; i < 2; i++) resizeBilinear(small.subarray(i * 36 * 64, (i + 1) * 36 * 64), 36, 64, 144, 256, up.subarray(i * 144 * 256, (i + 1) * 144 * 256));
    const direct = await extractFeatures(up, 2, 144, 256, 'block_12_add', { threads: 2 });
    expect(direct.features).toEqual(f.features);
    // Batching splits images, not values: the second image alone gives the second row.
    const second = await extractFeatures(small.subarray(36 * 64), 1, 36, 64, 'block_12_add', { threads: 2 });
    const row = f.features.subarray(96 * 9 * 16);
    let maxDiff = 0;
    for (let i = 0; i < row.length; i++) maxDiff = Math.max(maxDiff, Math.abs(row[i] - second.features[i]));
    expect(maxDiff).toBeLessThan(1e-4);
  });
});

describe('conversion helpers', () => {
  it('TF "same" padding: symmetric at stride 1, end-heavy at stride 2 on even sizes', () => {
    expect(samePads([3, 3], [1, 1], [10, 11])).toEqual([1, 1, 1, 1]);
    expect(samePads([4, 1], [1, 1], [10, 10])).toEqual([1, 0, 2, 0]);
    // TF: out = ceil(n / s), total = max((out - 1) s + k - n, 0), odd pixel at the end.
    expect(samePads([3, 3], [2, 2], [224, 9])).toEqual([0, 1, 1, 1]);
    expect(samePads([5], [2], [10])).toEqual([1, 2]);
    expect(samePads([1], [2], [9])).toEqual([0, 0]);
  });

  it('depthwise kernels map channel c, multiplier q to output channel c * m + q', () => {
    // [kh=1, kw=2, channels=2, multiplier=2], value encodes (x, c, q).
    const data = new Float32Array(8);
    for (let x = 0; x < 2; x++) for (let c = 0; c < 2; c++) for (let q = 0; q < 2; q++) data[(x * 2 + c) * 2 + q] = 100 * x + 10 * c + q;
    const k = depthwiseKernelToOnnx({ shape: [1, 2, 2, 2], data });
    expect(k.dims).toEqual([4, 1, 1, 2]);
    expect([...k.data]).toEqual([0, 100, 1, 101, 10, 110, 11, 111]);
  });

  it('half-pixel bilinear upsampling keeps constants and pixel centres', () => {
    expect(resizeBilinear(new Float32Array(6).fill(3), 2, 3, 8, 12).every((v) => Math.abs(v - 3) < 1e-6)).toBe(true);
    // 1x2 -> 1x8: output o samples source x = (o + 0.5) / 4 - 0.5, clamped to the outer centres.
    expect([...resizeBilinear(Float32Array.of(0, 1), 1, 2, 1, 8)]).toEqual([0, 0, 0.125, 0.375, 0.625, 0.875, 1, 1]);
  });

  it('meanPearson: 1 for a linear copy, -1 for a flipped one, 0 for a constant column', () => {
    const a = [1, 5, 2, 5, 3, 5];
    expect(meanPearson(a, [2, 0, 4, 0, 6, 0], 3, 2)).toBeCloseTo(0.5, 12);
    expect(meanPearson([1, 2, 3], [3, 2, 1], 3, 1)).toBeCloseTo(-1, 12);
  });
});

describe('layer-selection table on the tiny preset', () => {
  let data: PreparedData;
  let table: LayerTable;
  beforeAll(async () => {
    data = prepareDataset(SensoriumDataset.open(await tinyDataset()), DEFAULT_PREPROCESS, { quiet: true });
    table = await featureLayerTable(data, { threads: 2 });
  }, 120_000);

  it('has one row per candidate, in depth order, with finite correlations and the best the maximum', () => {
    expect(table.rows.map((r) => r.layer)).toEqual(FEATURE_LAYERS.map((l) => l.name));
    for (const r of table.rows) {
      expect(Number.isFinite(r.correlation), r.layer).toBe(true);
      expect(r.dims).toBe(r.channels * r.height * r.width);
      expect(r.path.map((p) => p.alpha)).toContain(r.alpha);
      expect(Math.max(...r.path.map((p) => p.correlation))).toBe(r.correlation);
    }
    expect(table.best.correlation).toBe(Math.max(...table.rows.map((r) => r.correlation)));
    // Simulated V1 responses are image-driven: features must predict them clearly above chance.
    expect(table.best.correlation).toBeGreaterThan(0.04);
    expect(Number.isFinite(table.pixels.correlation)).toBe(true);
    const text = formatLayerTable(table.rows, { pixels: table.pixels });
    expect(text.split('\n')).toHaveLength(table.rows.length + 4);
    expect(text).toMatch(new RegExp(`${table.best.layer}\\s.*<- best`));
  });

  it('falls to chance when responses are shuffled against the stimuli', async () => {
    const shuffled: PreparedData = { ...data, train: { ...data.train, responses: rotateRows(data.train.responses, data.train.count, data.neurons, 97) } };
    const control = await featureLayerTable(shuffled, { layers: [table.best.layer], threads: 2 });
    expect(Math.abs(control.rows[0].correlation)).toBeLessThan(table.best.correlation / 2);
  });
});

/** Rows shifted cyclically by k: each stimulus paired with another trial's responses. */
function rotateRows(m: Float32Array, rows: number, cols: number, k: number): Float32Array {
  const out = new Float32Array(m.length);
  for (let r = 0; r < rows; r++) out.set(m.subarray(r * cols, (r + 1) * cols), ((r + k) % rows) * cols);
  return out;
}

/**
 * The full comparison the references above came from, where TF.js can be loaded: every element of
 * every output against TF.js running the original model. Not a dependency of cortexcast; set
 * CORTEXCAST_TFJS_DIR to a folder with @tensorflow/tfjs installed to run it.
 */
interface TfTensor {
  rank: number;
  shape: number[];
  transpose(perm: number[]): TfTensor;
  data(): Promise<Float32Array>;
}
interface TfLayersModel {
  loadWeights(weights: unknown, strict: boolean): void;
  predict(x: TfTensor): TfTensor | TfTensor[];
}
interface Tfjs {
  setBackend(name: string): Promise<boolean>;
  tensor4d(data: Float32Array, shape: number[]): TfTensor;
  io: { decodeWeights(data: ArrayBuffer, specs: unknown[]): unknown };
  models: { modelFromJSON(json: { modelTopology: unknown }): Promise<TfLayersModel> };
}
const tfjsDir = process.env.CORTEXCAST_TFJS_DIR;
const tfjsPath = ((): string | undefined => {
  try {
    return createRequire(tfjsDir ? `${tfjsDir}/package.json` : import.meta.url).resolve('@tensorflow/tfjs');
  } catch {
    return undefined;
  }
})();

describe.skipIf(!tfjsPath)('MobileNetV2 conversion against live TF.js (CORTEXCAST_TFJS_DIR)', () => {
  it('every output element within 1e-3 of TF.js', async () => {
    const require = createRequire(import.meta.url);
    const mod = (await import(tfjsPath!)) as Tfjs & { default?: Tfjs };
    const tf = mod.default ?? mod;
    await tf.setBackend('cpu');
    const dir = require.resolve('nsfwjs').replace(/dist\/.*$/, 'dist/models/mobilenet_v2');
    const m = require(`${dir}/model.min.js`) as {
      modelTopology: { model_config: { config: { layers: { name: string; config: Record<string, unknown> }[]; output_layers: unknown } } };
      weightsManifest: { paths: string[]; weights: unknown[] }[];
    };
    const bytes = Buffer.concat(m.weightsManifest.flatMap((g) => g.paths.map((p) => Buffer.from(require(`${dir}/${p}.min.js`) as string, 'base64'))));
    const weights = tf.io.decodeWeights(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length), m.weightsManifest.flatMap((g) => g.weights));
    for (const [H, W, layers] of [[224, 224, CLASSIFIER_LAYERS], [144, 256, MAP_LAYERS]] as const) {
      const topo = JSON.parse(JSON.stringify(m.modelTopology)) as typeof m.modelTopology;
      const cfg = topo.model_config.config;
      cfg.layers = cfg.layers.slice(0, Math.max(...layers.map((o) => cfg.layers.findIndex((l) => l.name === o))) + 1);
      cfg.layers[0].config.batch_input_shape = [null, H, W, 3];
      cfg.output_layers = layers.map((o) => [o, 0, 0]);
      const model = await tf.models.modelFromJSON({ modelTopology: topo });
      model.loadWeights(weights, false);
      const grey = probes(H, W);
      const rgb = new Float32Array(grey.length * 3).map((_, i) => grey[Math.floor(i / 3)]);
      const res = model.predict(tf.tensor4d(rgb, [2, H, W, 3]));
      const outs = Array.isArray(res) ? res : [res];
      const ours = await runConverted([...layers], H, W);
      for (let i = 0; i < layers.length; i++) {
        const t = outs[i].rank === 4 ? outs[i].transpose([0, 3, 1, 2]) : outs[i];
        const ref = await t.data();
        const got = ours[layers[i]].data;
        expect(got.length).toBe(ref.length);
        let maxDiff = 0;
        for (let k = 0; k < ref.length; k++) maxDiff = Math.max(maxDiff, Math.abs(got[k] - ref[k]));
        expect(maxDiff, layers[i]).toBeLessThan(1e-3);
      }
    }
  }, 120_000);
});
