import { GraphError, newGraph, tensor, type Graph, type Value } from '../onnx/index.js';
import { int64s, param, reshape, type LayerContext } from '../layers.js';

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

/** A fitted ridge decoder as a frozen part of a deep decoder: weights [neurons, H*W], bias [H*W]. */
export interface RidgeAnchor {
  weights: Float32Array;
  bias: Float32Array;
  height: number;
  width: number;
}

/**
 * The ridge estimate [B, 1, H, W] of responses [B, neurons], its weights constants of the graph
 * (not trained): the linear part of the decoder stays the closed-form optimum.
 */
export function ridgeImage(ctx: LayerContext, responses: Value, anchor: RidgeAnchor, scope = 'anchor'): Value {
  const { g } = ctx;
  const neurons = responses.shape[1];
  const P = anchor.height * anchor.width;
  if (typeof neurons !== 'number' || anchor.weights.length !== neurons * P || anchor.bias.length !== P)
    throw new GraphError(`ridge anchor: ${anchor.weights.length} weights and ${anchor.bias.length} biases do not fit ${neurons} neurons x ${anchor.height}x${anchor.width} pixels`);
  return g.scope(scope, () => {
    const w = g.initializer('weight', tensor('float32', [neurons, P], anchor.weights));
    const b = g.initializer('bias', tensor('float32', [P], anchor.bias));
    return reshape(ctx, g.op('Add', [g.op('MatMul', [responses, w]), b]), [-1, 1, anchor.height, anchor.width]);
  });
}

/** Scope of the residual gate: trainers give it its own learning rate (RESIDUAL_GATE_LR_FACTOR). */
export const RESIDUAL_SCOPE = 'residual';

/**
 * The gate's learning rate as a multiple of the network's. AdamW moves a parameter by about its
 * learning rate per step, so at 3e-4 the gate needed ~3,000 steps to reach 1 and the anchored GAN sat
 * at the ridge image for its first epochs; at 30x it can open within ~100 steps.
 */
export const RESIDUAL_GATE_LR_FACTOR = 30;

/**
 * base + gate * correction with a trainable scalar gate that starts at 0, so the untrained decoder
 * is exactly `base` (the ridge estimate) and training only has to learn what the linear fit misses.
 * Adam's updates do not scale with the gate, so the correction trains from the second step.
 */
export function gatedResidual(ctx: LayerContext, base: Value, correction: Value, scope = RESIDUAL_SCOPE): Value {
  return ctx.g.scope(scope, () => ctx.g.op('Add', [base, ctx.g.op('Mul', [correction, param(ctx, 'gate', tensor('float32', [1], [0]))])]));
}
