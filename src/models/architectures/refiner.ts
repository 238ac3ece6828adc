import { batchNorm, conv2d, convTranspose2d, crop, dropout, fixedDim, relu, type LayerContext } from '../layers.js';
import type { Value } from '../onnx/index.js';

/**
 * cortexcast's CNN decoder (not the report's): the ridge image plus a small convolutional network's
 * correction of it. The linear readout already recovers what is linearly decodable; what a network
 * can add is an image prior (edges, local contrast), which needs few weights where the report's
 * 40M-weight FC readin memorises a few thousand trials. The image-space refinement of a linear
 * decoder follows Parthasarathy et al. (NeurIPS 2017, retina). Two depths: `levels: 0`, three
 * full-resolution convolutions (a 7 x 7 receptive field: the small profile), and `levels: 2`, a
 * U-Net whose bottleneck sees the whole 36 x 64 image - on simulated data it learned to recognise
 * the train photos and overfit within an epoch (docs/bench), so it is the paper profile's only.
 */
export interface RefinerConfig {
  /** Channels at full resolution; x2 and x4 at the two coarser levels. */
  channels: number;
  dropout: number;
  /**
   * 2: the U-Net (two downsamplings, a receptive field of the whole image); 0: three full-resolution
   * convolutions, a 7 x 7 receptive field, which can sharpen and restore contrast but cannot recognise
   * which training photo a crop came from.
   */
  levels: 0 | 2;
}

export const REFINER_PROFILES: Record<'small' | 'paper', RefinerConfig> = {
  /** 4,913 weights, ~11 M multiply-adds per frame: noise next to the ridge MatMul (20 M). */
  small: { channels: 16, dropout: 0.1, levels: 0 },
  paper: { channels: 64, dropout: 0.1, levels: 2 },
};

/** The refiner's last layer: zero-initialised by anchoredResidual so the untrained decoder is the ridge decoder. */
export const REFINER_LAST_LAYER = 'refiner/out/';

/** Correction [B, 1, H, W] of a ridge image [B, 1, H, W]; parameters under `refiner/`. */
export function refinerCorrection(ctx: LayerContext, image: Value, cfg: RefinerConfig): Value {
  const { g } = ctx;
  const C = cfg.channels;
  const block = (x: Value, channels: number, name: string, o: { stride?: number; dilation?: number } = {}): Value =>
    g.scope(name, () => {
      const d = o.dilation ?? 1;
      const y = conv2d(ctx, x, channels, { kernel: 3, stride: o.stride, padding: d, dilation: d });
      return dropout(ctx, relu(ctx, batchNorm(ctx, y)), cfg.dropout);
    });
  // Upsample x2 and crop to the skip's size (odd sizes round up on the way down), then fuse with it.
  const up = (x: Value, skip: Value, channels: number, name: string): Value =>
    g.scope(name, () => {
      let y = convTranspose2d(ctx, x, channels, { kernel: 4, stride: 2, padding: 1 });
      y = crop(ctx, y, 0, 0, fixedDim(skip, 2, name), fixedDim(skip, 3, name));
      return block(g.op('Concat', [y, skip], { axis: 1 }), channels, 'fuse');
    });
  return g.scope('refiner', () => {
    if (cfg.levels === 0) {
      const local = block(block(block(image, C, 'enc1a'), C, 'enc1b'), C, 'enc1c');
      return g.scope('out', () => conv2d(ctx, local, 1, { kernel: 1, padding: 0 }));
    }
    const e1 = block(block(image, C, 'enc1a'), C, 'enc1b');
    const e2 = block(block(e1, 2 * C, 'enc2a', { stride: 2 }), 2 * C, 'enc2b');
    const mid = block(block(e2, 4 * C, 'mida', { stride: 2 }), 4 * C, 'midb', { dilation: 2 });
    const d2 = up(mid, e2, 2 * C, 'dec2');
    const d1 = up(d2, e1, C, 'dec1');
    return g.scope('out', () => conv2d(ctx, d1, 1, { kernel: 3, padding: 1 }));
  });
}
