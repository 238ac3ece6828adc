import { GraphError, newGraph, tensor, type Graph, type Value } from '../onnx/index.js';
import { int64s, reshape, resizeImage, type LayerContext } from '../layers.js';

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
 * A fitted ridge decoder as a frozen part of a deep decoder. Channel 0 is the image; further channels
 * (`channels` > 1) are other linear read-outs of the same responses, such as the local-contrast ridge
 * (training/ridge/contrast.ts), given to a network as inputs. A smooth read-out may be fitted on a
 * coarser grid (`grids`) and upsampled bilinearly in the graph: the weights a frame reads shrink with it.
 */
export interface RidgeAnchor {
  /** [neurons, sum over channels of grid height x width], each row the channels' columns side by side. */
  weights: Float32Array;
  bias: Float32Array;
  height: number;
  width: number;
  /** Read-out channels (1: the image alone). */
  channels: number;
  /** Each channel's read-out grid [h, w]; absent: every channel at height x width. Channel 0 is always full size. */
  grids?: readonly (readonly [number, number])[];
  /**
   * Each train trial's out-of-fold ridge estimate [trials, C*H*W] (coarse channels already upsampled):
   * when present, a training graph takes the ridge image as an input (`<scope>_image`, fed per row)
   * instead of computing the in-sample one, whose errors are smaller than those the decoder meets on
   * unseen trials. Export computes it.
   */
  trainImages?: Float32Array;
}

/** Where each channel's read-out lies in a row of the anchor's weights: its grid [h, w], first column and width. */
export interface AnchorChannel {
  grid: readonly [number, number];
  offset: number;
  size: number;
}

/** Each channel's grid and columns (full size where the anchor names no grids), and the row width they add up to. */
export function anchorChannels(anchor: RidgeAnchor): { channels: AnchorChannel[]; columns: number } {
  const grids = anchor.grids ?? Array.from({ length: anchor.channels }, () => [anchor.height, anchor.width] as const);
  if (grids.length !== anchor.channels) throw new GraphError(`ridge anchor: ${grids.length} grids for ${anchor.channels} channels`);
  if (grids[0][0] !== anchor.height || grids[0][1] !== anchor.width) throw new GraphError(`ridge anchor: the image channel's grid ${grids[0].join('x')} is not ${anchor.height}x${anchor.width}`);
  let offset = 0;
  const channels = grids.map((grid) => {
    const c = { grid, offset, size: grid[0] * grid[1] };
    offset += c.size;
    return c;
  });
  return { channels, columns: offset };
}

/** Whether a graph built on ctx takes this anchor's ridge image as a fed input (training with out-of-fold estimates). */
export const anchorIsFed = (ctx: LayerContext, anchor: RidgeAnchor): boolean => ctx.mode === 'train' && !!anchor.trainImages;

/**
 * The ridge estimate [B, C, H, W] of responses [B, neurons] (C = anchor.channels, channel 0 the image),
 * its weights constants of the graph (not trained): the linear part of the decoder stays the
 * closed-form optimum. All channels at full size are one MatMul; a coarse channel is its own MatMul,
 * upsampled bilinearly by resizeImage's two small constant MatMuls.
 */
export function ridgeImage(ctx: LayerContext, responses: Value, anchor: RidgeAnchor, scope = 'anchor'): Value {
  const { g } = ctx;
  const neurons = responses.shape[1];
  const C = anchor.channels;
  const { height: H, width: W } = anchor;
  const { channels, columns: cols } = anchorChannels(anchor);
  if (typeof neurons !== 'number' || anchor.weights.length !== neurons * cols || anchor.bias.length !== cols)
    throw new GraphError(`ridge anchor: ${anchor.weights.length} weights and ${anchor.bias.length} biases do not fit ${neurons} neurons x ${channels.map((c) => c.grid.join('x')).join(' + ')} pixels`);
  if (anchorIsFed(ctx, anchor)) return g.input(`${scope}_image`, 'float32', [responses.shape[0], C, H, W]);
  const full = channels.every(({ grid: [h, w] }) => h === H && w === W);
  return g.scope(scope, () => {
    if (full) {
      const w = g.initializer('weight', tensor('float32', [neurons, cols], anchor.weights));
      const b = g.initializer('bias', tensor('float32', [cols], anchor.bias));
      return reshape(ctx, g.op('Add', [g.op('MatMul', [responses, w]), b]), [-1, C, H, W]);
    }
    const maps = channels.map(({ grid: [h, w], offset, size: n }, c) => {
      const weights = new Float32Array(neurons * n);
      for (let r = 0; r < neurons; r++) weights.set(anchor.weights.subarray(r * cols + offset, r * cols + offset + n), r * n);
      const bias = anchor.bias.slice(offset, offset + n);
      const wc = g.initializer(`weight_${c}`, tensor('float32', [neurons, n], weights));
      const bc = g.initializer(`bias_${c}`, tensor('float32', [n], bias));
      const m = reshape(ctx, g.op('Add', [g.op('MatMul', [responses, wc]), bc]), [-1, 1, h, w]);
      return h === H && w === W ? m : g.scope(`upsample_${c}`, () => resizeImage(ctx, m, H, W));
    });
    return g.op('Concat', maps, { axis: 1 });
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
