import { scalar } from './layers.js';
import { readModel, tensor, writeModel, type Graph, type RewriteNode, type Value } from './onnx/index.js';

/**
 * int8 weights for a decoder graph: every MatMul whose right operand is a constant of at least
 * `minWeights` elements (ridge's 8,600 x 2,304 map, the CNN's FC readin) becomes an integer MatMul.
 * Those MatMuls are memory-bound on a CPU (ridge reads 79 MB of float32 per frame); int8 reads a
 * quarter of that and ORT runs MatMulInteger with VNNI where the CPU has it.
 *
 *   weights:     symmetric int8 per output column, scale_c = max|W[:, c]| / 127, stored as uint8
 *                with zero point 128
 *   activations: per row (per frame) symmetric, scale_r = max|x[r, :]| / 127, stored as uint8 with
 *                zero point 128, because ORT's MatMulInteger takes one scalar zero point for A
 *   y = (MatMulInteger(x_q, W_q, 128, 128) as float) * scale_c * scale_r
 *
 * Per-row activation scales keep frames independent: a frame decodes the same whichever other
 * streams' frames the server batched it with (one per-tensor scale would couple them). Convolutions
 * stay float32: their weights are small and compute-bound here.
 */
export interface QuantizeResult {
  model: Uint8Array;
  /** The MatMul weights that became int8, with their sizes. */
  quantized: { name: string; elements: number }[];
  opset: number;
}

export const DEFAULT_MIN_WEIGHTS = 65_536;

export function quantizeModel(model: Uint8Array, o: { minWeights?: number } = {}): QuantizeResult {
  const minWeights = o.minWeights ?? DEFAULT_MIN_WEIGHTS;
  const quantized: QuantizeResult['quantized'] = [];
  const read = readModel(model, {
    rewrite: (g, node) => {
      const w = node.opType === 'MatMul' && !node.domain ? constantMatrix(g, node) : undefined;
      if (!w || w.data.length < minWeights) return undefined;
      quantized.push({ name: node.inputs[1]!.name, elements: w.data.length });
      return [integerMatMul(g, node.inputs[0]!, w, node.name || node.inputs[1]!.name)];
    },
  });
  read.graph.pruneInitializers();
  return { model: writeModel(read.graph, { docString: 'cortexcast decoder, int8 MatMul weights (cortexcast quantize)', metadata: read.metadata }), quantized, opset: read.opset };
}

function constantMatrix(g: Graph, node: RewriteNode): { data: Float32Array; rows: number; cols: number } | undefined {
  const [a, b] = node.inputs;
  if (!a || !b || a.dtype !== 'float32' || a.shape.length !== 2) return undefined;
  const t = g.initializers.get(b.name)?.tensor;
  if (!t || t.dtype !== 'float32' || t.dims.length !== 2) return undefined;
  return { data: t.data as Float32Array, rows: t.dims[0], cols: t.dims[1] };
}

function integerMatMul(g: Graph, x: Value, w: { data: Float32Array; rows: number; cols: number }, name: string): Value {
  const { rows: K, cols: N, data } = w;
  const colScale = new Float32Array(N);
  for (let k = 0; k < K; k++) for (let c = 0; c < N; c++) colScale[c] = Math.max(colScale[c], Math.abs(data[k * N + c]));
  for (let c = 0; c < N; c++) colScale[c] = colScale[c] / 127 || 1;
  // Stored as uint8 with zero point 128 (u8 x u8): ORT's u8 x s8 kernel on AVX2 without VNNI sums
  // pairs of products in int16 and saturates (measured here: 20% output error at batch 3).
  const q = new Uint8Array(K * N);
  for (let k = 0; k < K; k++) for (let c = 0; c < N; c++) q[k * N + c] = 128 + Math.max(-127, Math.min(127, Math.round(data[k * N + c] / colScale[c])));
  return g.scope(`${name}_int8`, () => {
    const wq = g.initializer('weight_q', tensor('uint8', [K, N], q));
    const ws = g.initializer('weight_scale', tensor('float32', [N], colScale));
    const maxAbs = g.op('ReduceMax', [g.op('Abs', [x])], { axes: [1], keepdims: 1 });
    // A frame of zeros gets scale 1 (any scale quantizes it exactly).
    const rowScale = g.op('Max', [g.op('Div', [maxAbs, scalar(g, 'q127', 127)]), scalar(g, 'tiny', 1e-30)]);
    const shifted = g.op('Add', [g.op('Round', [g.op('Div', [x, rowScale])]), scalar(g, 'zero_point_f', 128)]);
    const xq = g.op('Cast', [g.op('Clip', [shifted, scalar(g, 'lo', 0), scalar(g, 'hi', 255)])], { to: 2 });
    const zeroPoint = g.initializer('zero_point', tensor('uint8', [], [128]));
    const acc = g.op('MatMulInteger', [xq, wq, zeroPoint, zeroPoint]);
    return g.op('Mul', [g.op('Mul', [g.op('Cast', [acc], { to: 1 }), ws]), rowScale]);
  });
}
