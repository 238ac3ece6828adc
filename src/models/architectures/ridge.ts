import { newGraph, tensor, type Graph } from '../onnx/index.js';
import { int64s } from '../layers.js';

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
