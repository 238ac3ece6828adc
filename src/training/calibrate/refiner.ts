import { existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { writeDirAtomic } from '../../common/atomic-dir.js';
import { ccError } from '../../common/errors.js';
import { readNpy, writeNpy } from '../../common/npy.js';
import { Rng } from '../../models/rng.js';
import { REFINER_LAST_LAYER, REFINER_PROFILES, refinerCorrection, type RefinerConfig } from '../../models/architectures/refiner.js';
import { anchoredResidual, DECODER_INPUT, DECODER_OUTPUT, ridgeImage } from '../../models/architectures/ridge.js';
import type { LayerContext } from '../../models/layers.js';
import { tensor, type Graph, type TensorData } from '../../models/onnx/index.js';
import { LOSSES } from '../engine/losses.js';
import { buildEvalGraph, TrainingSession, type TrainingSpec } from '../engine/trainer.js';

/**
 * A refiner trained across animals. cortexcast's CNN decoder is the ridge image plus a small
 * convolutional correction of that image (models/architectures/refiner.ts); the correction sees
 * pixels only, never neurons, so one trained on several animals' ridge images serves on top of any
 * other animal's ridge - a new animal's calibrated ridge gets it from its first refit.
 *
 * Training pairs are each animal's out-of-fold ridge estimates of its train trials (the errors a
 * ridge makes on trials it did not see) with the true images, in that animal's z-scored pixels.
 */
export const REFINER_FORMAT = 'cortexcast-transfer-refiner';

export interface TransferRefiner {
  config: RefinerConfig;
  height: number;
  width: number;
  tensors: Map<string, TensorData>;
  /** What it was trained on, for the manifest of bundles that carry it. */
  animals: string[];
  steps: number;
}

export interface RefinerAnimal {
  name: string;
  /** [count, H*W] out-of-fold ridge estimates (z-scored pixels). */
  ridgeImages: Float32Array;
  /** [count, H*W] true images (z-scored pixels). */
  targets: Float32Array;
  count: number;
}

const SEED = 7;

/** The refiner on a fed ridge image [batch, 1, H, W]: what training optimises. */
function trainingSpec(cfg: RefinerConfig, height: number, width: number, batch: number, lr: number, seed: number): TrainingSpec {
  return {
    name: 'transfer_refiner',
    outputName: DECODER_OUTPUT,
    batch,
    seed,
    model: (ctx, b) => {
      const image = ctx.g.input('ridge_image', 'float32', [b, 1, height, width]);
      return { inputs: [image], output: anchoredResidual(ctx, image, refinerCorrection(ctx, image, cfg), REFINER_LAST_LAYER) };
    },
    objective: (ctx: LayerContext, out) => {
      const t = ctx.g.input('target', 'float32', [batch, 1, height, width]);
      return { targets: [t], loss: LOSSES.mse(ctx, out, t) };
    },
    groups: [{ match: '', lr, weightDecay: 1e-4 }],
    optimizer: { kind: 'adamw' },
    threads: 1,
  };
}

/** Train on the pooled animals for `steps` steps or `budgetSeconds`, whichever ends first. */
export async function trainTransferRefiner(o: { animals: RefinerAnimal[]; height: number; width: number; steps: number; budgetSeconds?: number; batch?: number; lr?: number; config?: RefinerConfig; log?: (s: string) => void }): Promise<TransferRefiner> {
  const cfg = o.config ?? REFINER_PROFILES.small;
  const batch = o.batch ?? 32;
  const P = o.height * o.width;
  const rows = o.animals.flatMap((a, k) => Array.from({ length: a.count }, (_, i) => [k, i] as const));
  if (rows.length < batch) throw ccError('CC_ERR_CALIBRATION', `refiner training needs at least ${batch} trials across animals, has ${rows.length}`);
  const session = await TrainingSession.create(trainingSpec(cfg, o.height, o.width, batch, o.lr ?? 1e-3, SEED));
  const rng = new Rng(SEED);
  const x = new Float32Array(batch * P);
  const y = new Float32Array(batch * P);
  const t0 = Date.now();
  let step = 0;
  let recent = 0;
  for (; step < o.steps && (!o.budgetSeconds || Date.now() - t0 < o.budgetSeconds * 1000); step++) {
    for (let b = 0; b < batch; b++) {
      const [k, i] = rows[Math.floor(rng.next() * rows.length)];
      x.set(o.animals[k].ridgeImages.subarray(i * P, (i + 1) * P), b * P);
      y.set(o.animals[k].targets.subarray(i * P, (i + 1) * P), b * P);
    }
    const r = await session.trainStep({ ridge_image: tensor('float32', [batch, 1, o.height, o.width], x), target: tensor('float32', [batch, 1, o.height, o.width], y) });
    if (!Number.isFinite(r.loss)) throw ccError('CC_ERR_TRAINING_DIVERGED', 'transfer refiner', step, r.loss);
    recent = step ? 0.95 * recent + 0.05 * r.loss : r.loss;
    if (step % 100 === 0) o.log?.(`refiner: step ${step}, loss ${recent.toFixed(4)}`);
  }
  return { config: cfg, height: o.height, width: o.width, tensors: session.modelTensors(), animals: o.animals.map((a) => a.name), steps: step };
}

/**
 * One decoder graph: responses -> this ridge's image -> + the refiner's correction. The ridge's
 * weights are constants of the graph, the refiner's its trained tensors: served like any CNN bundle.
 */
export function composeRidgeRefiner(ridge: { weights: Float32Array; bias: Float32Array; neurons: number }, r: TransferRefiner): Graph {
  const spec: TrainingSpec = {
    ...trainingSpec(r.config, r.height, r.width, 1, 0, SEED),
    name: 'calibrated_ridge_refiner',
    model: (ctx, b) => {
      const input = ctx.g.input(DECODER_INPUT, 'float32', [b, ridge.neurons]);
      const base = ridgeImage(ctx, input, { weights: ridge.weights, bias: ridge.bias, height: r.height, width: r.width, channels: 1 });
      return { inputs: [input], output: anchoredResidual(ctx, base, refinerCorrection(ctx, base, r.config), REFINER_LAST_LAYER) };
    },
  };
  const { graph } = buildEvalGraph(spec, r.tensors, false);
  return graph;
}

/** The refiner on its own (fed ridge images in, refined images out), for scoring decodes made elsewhere. */
export function refinerOnlyGraph(r: TransferRefiner): Graph {
  return buildEvalGraph(trainingSpec(r.config, r.height, r.width, 1, 0, SEED), r.tensors, false).graph;
}

const fileOf = (name: string): string => `${name.replaceAll('/', '__')}.npy`;

export function saveRefiner(dir: string, r: TransferRefiner): void {
  writeDirAtomic(dir, (tmp) => {
    const names = [...r.tensors.keys()];
    for (const n of names) {
      const t = r.tensors.get(n)!;
      writeNpy(join(tmp, fileOf(n)), Float32Array.from(t.data as Float32Array), [...t.dims]);
    }
    writeFileSync(join(tmp, 'refiner.json'), JSON.stringify({ format: REFINER_FORMAT, config: r.config, height: r.height, width: r.width, animals: r.animals, steps: r.steps, tensors: names }, null, 2) + '\n');
  });
}

export function loadRefiner(dir: string): TransferRefiner {
  const meta = join(dir, 'refiner.json');
  if (!existsSync(meta)) throw ccError('CC_ERR_CALIBRATION', `refiner ${dir}: no refiner.json (train one with \`cortexcast train refiner\`)`);
  const m = JSON.parse(readFileSync(meta, 'utf8')) as { format?: string; config: RefinerConfig; height: number; width: number; animals: string[]; steps: number; tensors: string[] };
  if (m.format !== REFINER_FORMAT) throw ccError('CC_ERR_CALIBRATION', `refiner ${dir}: refiner.json is not a ${REFINER_FORMAT}`);
  const present = new Set(readdirSync(dir));
  const tensors = new Map<string, TensorData>();
  for (const n of m.tensors) {
    if (!present.has(fileOf(n))) throw ccError('CC_ERR_CALIBRATION', `refiner ${dir}: ${fileOf(n)} is missing`);
    const a = readNpy(join(dir, fileOf(n)));
    tensors.set(n, tensor('float32', a.shape, a.data as Float32Array));
  }
  return { config: m.config, height: m.height, width: m.width, tensors, animals: m.animals, steps: m.steps };
}
