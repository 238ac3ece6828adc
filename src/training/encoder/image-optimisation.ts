import { bilinearSample, ENCODER_INPUT, ENCODER_OUTPUT, encoderCore, positiveRate, type EncoderConfig } from '../../models/architectures/encoder.js';
import { int64s, reduce, scalar, type LayerContext } from '../../models/layers.js';
import { newGraph, readModel, type Graph, type Value } from '../../models/onnx/index.js';
import { GraphError } from '../../models/onnx/graph.js';
import { Rng } from '../../models/rng.js';
import { buildGradients } from '../engine/autodiff/engine.js';

/**
 * One step of image optimisation through a frozen encoder, as a graph (the report's MEIs and
 * inverted encoder): the encoder's forward pass, the gradient of the objective w.r.t. the image,
 * the gradient blurred by a Gaussian (reflect padding), the step, and the per-image rescaling. The
 * step size and the blur kernel are inputs, so one session serves a whole hyperparameter search.
 *
 *  - `mei`:    maximise neuron[b]'s predicted response for image b; x <- x + lr * blur(grad);
 *              then mean 0 / std `meiStd` per image and clip to [-1, 1].
 *  - `invert`: minimise mean_n (enc(x)_n - target_n)^2 per image; x <- x - lr * blur(grad);
 *              then rescale to std 1.
 * Each image's objective is summed over the batch, so an image's step does not depend on the batch.
 */
export type ImageObjective = 'mei' | 'invert';

export const STEP_IMAGE = 'image';
export const STEP_NEXT = 'image_next';
export const STEP_LR = 'lr';
export const STEP_KERNEL = 'blur_kernel';
export const STEP_TARGET = 'target';
export const STEP_NEURON = 'neuron';
export const STEP_SCORE = 'score';
/** Largest blur radius the step graphs take (3 sigma of the search space's largest sigma, 2.5). */
export const MAX_BLUR_RADIUS = 8;

export const blurRadiusFor = (sigma: number): number => Math.min(MAX_BLUR_RADIUS, Math.max(1, Math.ceil(3 * sigma)));

export function buildImageStep(encoderModel: Uint8Array, objective: ImageObjective, o: { meiStd?: number; blurRadius: number }): Graph {
  const { graph: g } = readModel(encoderModel);
  const image = g.value(ENCODER_INPUT);
  const responses = g.value(ENCODER_OUTPUT);
  if (!g.inputs.some((v) => v.name === ENCODER_INPUT)) throw new GraphError(`encoder graph has no input '${ENCODER_INPUT}'`);
  g.outputs.length = 0;
  const ctx: LayerContext = { g, rng: new Rng(0), mode: 'eval' };
  const batch = image.shape[0];
  const n = responses.shape[1] as number;
  g.input(STEP_LR, 'float32', []);
  g.input(STEP_KERNEL, 'float32', [1, 1, 2 * o.blurRadius + 1, 2 * o.blurRadius + 1]);
  let score: Value;
  let loss: Value;
  if (objective === 'mei') {
    const neuron = g.input(STEP_NEURON, 'int64', [batch, 1]);
    score = g.op('GatherElements', [responses, neuron], { axis: 1 });
    loss = g.op('Neg', [reduce(ctx, 'ReduceSum', score, [0, 1], false)]);
  } else {
    const target = g.input(STEP_TARGET, 'float32', [batch, n]);
    const d = g.op('Sub', [responses, target]);
    score = reduce(ctx, 'ReduceMean', g.op('Mul', [d, d]), [1], true);
    loss = reduce(ctx, 'ReduceSum', score, [0, 1], false);
  }
  const grad = buildGradients(g, loss, [image]).get(image.name)!;
  g.output(stepTail(ctx, image, grad, objective, o), STEP_NEXT);
  g.output(g.op('Reshape', [score, int64s(g, 'shape', [-1])]), STEP_SCORE);
  return g;
}

/** Blur the gradient (reflect padding), take the step, rescale per image (see buildImageStep). */
function stepTail(ctx: LayerContext, image: Value, grad: Value, objective: ImageObjective, o: { meiStd?: number; blurRadius: number }): Value {
  const { g } = ctx;
  return g.scope('step', () => {
    const r = o.blurRadius;
    const kernel = g.value(STEP_KERNEL);
    const padded = g.op('Pad', [grad, int64s(g, 'pads', [0, 0, r, r, 0, 0, r, r])], { mode: 'reflect' });
    const blurred = g.op('Conv', [padded, kernel], { kernel_shape: [2 * r + 1, 2 * r + 1] });
    const moved = g.op('Sub', [image, g.op('Mul', [blurred, g.value(STEP_LR)])]);
    const axes = [1, 2, 3];
    const mu = reduce(ctx, 'ReduceMean', moved, axes);
    const centred = g.op('Sub', [moved, mu]);
    const sd = g.op('Sqrt', [g.op('Add', [reduce(ctx, 'ReduceMean', g.op('Mul', [centred, centred]), axes), scalar(g, 'eps', 1e-12)])]);
    if (objective === 'mei') {
      const scaled = g.op('Mul', [g.op('Div', [centred, sd]), scalar(g, 'std', o.meiStd ?? 0.15)]);
      return g.op('Clip', [scaled, scalar(g, 'lo', -1), scalar(g, 'hi', 1)]);
    }
    return g.op('Div', [moved, sd]);
  });
}

/**
 * The MEI step for Gaussian-readout encoders, rebuilt from the encoder's config and weights so each
 * image reads out only its own neuron: the generic step computes (and differentiates) all N
 * readouts for every image, which on 8,600 neurons costs ~10x the core. Batch fixed at `batch`
 * (pad the last chunk). Same inputs and outputs as buildImageStep(..., 'mei'), neuron [batch, 1].
 */
export function buildSelectedMeiStep(encoderModel: Uint8Array, cfg: EncoderConfig, batch: number, o: { meiStd?: number; blurRadius: number }): Graph {
  const trained = readModel(encoderModel).graph.initializers;
  const prefix = [...trained.keys()].find((k) => /^readout[^/]*\/mu$/.test(k))?.replace(/\/mu$/, '');
  if (!prefix || cfg.readout !== 'gaussian') throw new GraphError('the selected-neuron MEI step needs a Gaussian-readout encoder');
  const g = newGraph('mei_step');
  const params: string[] = [];
  const state = new Map<string, Value | undefined>();
  const ctx: LayerContext = { g, rng: new Rng(0), mode: 'eval', params, state };
  const image = g.input(STEP_IMAGE, 'float32', [batch, 1, cfg.height, cfg.width]);
  const features = encoderCore(ctx, image, cfg);
  // The core's weights and running statistics, by the names the layers gave them.
  for (const name of [...params, ...state.keys()]) {
    const t = trained.get(name)?.tensor;
    if (!t) throw new GraphError(`encoder bundle lacks core tensor '${name}' (a different architecture?)`);
    g.setInitializer(name, t);
  }
  const take = (name: string): Value => g.initializer(name, trained.get(`${prefix}/${name}`)!.tensor);
  g.input(STEP_LR, 'float32', []);
  g.input(STEP_KERNEL, 'float32', [1, 1, 2 * o.blurRadius + 1, 2 * o.blurRadius + 1]);
  const neuron = g.input(STEP_NEURON, 'int64', [batch, 1]);
  const idx = g.op('Reshape', [neuron, int64s(g, 'flat', [batch])]);
  const mu = g.op('Clip', [g.op('Gather', [take('mu'), idx], { axis: 0 }), scalar(g, 'min', -1), scalar(g, 'max', 1)]);
  const positions = g.op('Unsqueeze', [mu, int64s(g, 'axes', [1])]);
  const sampled = g.op('Squeeze', [bilinearSample(ctx, features, positions), int64s(g, 'axes', [2])]);
  const weights = g.op('Transpose', [g.op('Gather', [take('features'), idx], { axis: 1 })], { perm: [1, 0] });
  const y = g.op('Add', [reduce(ctx, 'ReduceSum', g.op('Mul', [sampled, weights]), [1], false), g.op('Gather', [take('bias'), idx], { axis: 0 })]);
  const score = positiveRate(ctx, y);
  const loss = g.op('Neg', [reduce(ctx, 'ReduceSum', score, [0], false)]);
  const grad = buildGradients(g, loss, [image]).get(image.name)!;
  g.output(stepTail(ctx, image, grad, 'mei', o), STEP_NEXT);
  g.output(score, STEP_SCORE);
  return g;
}
