import { GraphError, newGraph, tensor, type Graph, type Value } from '../onnx/index.js';
import { int64s, reshape, type LayerContext } from '../layers.js';

export const DECODER_INPUT = 'responses';
export const DECODER_OUTPUT = 'image';

/**
 * The linear decoder: std-scaled responses [batch, neurons] -> z-scored image [batch, 1, H, W]
 * as one MatMul + Add. Weights are [neurons, H*W].
 */
export function buildRidgeGraph(weights: Float32Array, bias: Float32Array, neurons: number, height: number, width: number): Graph {
  const g = newGraph('ridge_decoder');
  const x = g.input(DECODER_INPUT, 'float32', ['batch', neurons]);
  const w = g.initializer('ridge/weight', tensor('float32', [neurons, height * width], weights), { exactName: true });
  const b = g.initializer('ridge/bias', tensor('float32', [height * width], bias), { exactName: true });
  const flat = g.op('Add', [g.op('MatMul', [x, w]), b]);
  g.output(g.op('Reshape', [flat, int64s(g, 'image_shape', [-1, 1, height, width])]), DECODER_OUTPUT);
  return g;
}

/**
 * A fitted ridge decoder as a frozen part of a deep decoder: weights [neurons, C*H*W], bias [C*H*W].
 * Channel 0 is the image; further channels (`channels` > 1) are other linear read-outs of the same
 * responses, such as the local-contrast ridge (training/ridge/contrast.ts), given to a network as inputs.
 */
export interface RidgeAnchor {
  weights: Float32Array;
  bias: Float32Array;
  height: number;
  width: number;
  /** Read-out channels (1: the image alone). */
  channels: number;
  /**
   * Each train trial's out-of-fold ridge estimate [trials, C*H*W]: when present, a training graph takes
   * the ridge image as an input (`<scope>_image`, fed per row) instead of computing the in-sample one,
   * whose errors are smaller than those the decoder meets on unseen trials. Export computes it.
   */
  trainImages?: Float32Array;
}

/** Whether a graph built on ctx takes this anchor's ridge image as a fed input (training with out-of-fold estimates). */
export const anchorIsFed = (ctx: LayerContext, anchor: RidgeAnchor): boolean => ctx.mode === 'train' && !!anchor.trainImages;

/**
 * The ridge estimate [B, C, H, W] of responses [B, neurons] (C = anchor.channels, channel 0 the image),
 * its weights constants of the graph (not trained): the linear part of the decoder stays the
 * closed-form optimum.
 */
export function ridgeImage(ctx: LayerContext, responses: Value, anchor: RidgeAnchor, scope = 'anchor'): Value {
  const { g } = ctx;
  const neurons = responses.shape[1];
  const C = anchor.channels;
  const CP = C * anchor.height * anchor.width;
  if (typeof neurons !== 'number' || anchor.weights.length !== neurons * CP || anchor.bias.length !== CP)
    throw new GraphError(`ridge anchor: ${anchor.weights.length} weights and ${anchor.bias.length} biases do not fit ${neurons} neurons x ${C} x ${anchor.height}x${anchor.width} pixels`);
  if (anchorIsFed(ctx, anchor)) return g.input(`${scope}_image`, 'float32', [responses.shape[0], C, anchor.height, anchor.width]);
  return g.scope(scope, () => {
    const w = g.initializer('weight', tensor('float32', [neurons, CP], anchor.weights));
    const b = g.initializer('bias', tensor('float32', [CP], anchor.bias));
    return reshape(ctx, g.op('Add', [g.op('MatMul', [responses, w]), b]), [-1, C, anchor.height, anchor.width]);
  });
}

/** Channel 0 of a ridge estimate [B, C, H, W] (the image itself), [B, 1, H, W]. */
export function anchorImageChannel(ctx: LayerContext, base: Value, anchor: RidgeAnchor): Value {
  if (anchor.channels === 1) return base;
  return ctx.g.op('Slice', [base, int64s(ctx.g, 'starts', [0]), int64s(ctx.g, 'ends', [1]), int64s(ctx.g, 'axes', [1])]);
}

/**
 * base + correction, where `correction` is a network whose last layer (the parameters under
 * `lastLayer`, e.g. 'core/layer5/') starts at zero: the untrained decoder is exactly `base` (the
 * ridge estimate), and from the first step that layer learns a readout of the network's features
 * while gradients reach the layers below. (A scalar gate at 0 in front of a random network was tried
 * first: its gradient was noise, it stayed near 0 and the anchored GAN never left the ridge image.)
 */
export function anchoredResidual(ctx: LayerContext, base: Value, correction: Value, lastLayer: string): Value {
  const zeroed = (ctx.params ?? []).filter((p) => p.startsWith(lastLayer));
  if (ctx.params && !zeroed.length) throw new GraphError(`anchored residual: no parameters under '${lastLayer}'`);
  for (const p of zeroed) {
    const t = ctx.g.initializers.get(p)!.tensor;
    ctx.g.setInitializer(p, tensor('float32', t.dims, new Float32Array(t.data.length)));
  }
  return ctx.g.op('Add', [base, correction]);
}
