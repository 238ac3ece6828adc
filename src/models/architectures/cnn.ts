import { batchNorm, centerCrop, convTranspose2d, dropout, leakyRelu, linear, relu, reshape, type LayerContext } from '../layers.js';
import type { Value } from '../onnx/index.js';
import { DECODER_INPUT } from './ridge.js';

/**
 * The report's CNN decoder (the authors' code sizes): a fully connected
 * readin to an unflattened [C0, h0, w0] tensor (BN1d, LeakyReLU, dropout), then transposed
 * convolutions with BN + ReLU + dropout between, a last transposed conv to one channel, and a centre
 * crop to the target size. Profiles scale channels; `paper` reproduces the report.
 */
export interface CnnDecoderConfig {
  readin: [channels: number, height: number, width: number];
  /** Transposed conv layers: output channels, kernel, stride, padding. The last must have 1 channel. */
  core: { channels: number; kernel: number; stride: number; padding: number }[];
  readinDropout: number;
  coreDropout: number;
  leakySlope: number;
  outHeight: number;
  outWidth: number;
}

/** The report's sizes (the authors' code): GPU territory, ~130-170 ms per frame on CPU. */
const PAPER: CnnDecoderConfig = {
  readin: [64, 18, 32],
  core: [
    { channels: 480, kernel: 7, stride: 2, padding: 2 },
    { channels: 256, kernel: 5, stride: 1, padding: 2 },
    { channels: 256, kernel: 5, stride: 1, padding: 2 },
    { channels: 128, kernel: 4, stride: 1, padding: 1 },
    { channels: 64, kernel: 3, stride: 1, padding: 1 },
    { channels: 1, kernel: 3, stride: 1, padding: 0 },
  ],
  readinDropout: 0.15,
  coreDropout: 0.35,
  leakySlope: 0.01,
  outHeight: 36,
  outWidth: 64,
};

/**
 * The report's appendix sizes: FC readin to 432 = [3, 9, 16], transposed convs 480 (k7 s2 p2), 256
 * (k5 p2), 256 (k5 p2), 128 (k4 p1), 64 (k3 p1). The appendix does not give the last layer; these
 * reach 20 x 34, so the final one-channel layer here is a k4 s2 p1 transposed conv to 40 x 68, the
 * code's output size, centre-cropped to 36 x 64 like the code's.
 */
const APPENDIX: CnnDecoderConfig = {
  ...PAPER,
  readin: [3, 9, 16],
  // The code's first five layers are the appendix's; only the last differs.
  core: [...PAPER.core.slice(0, 5), { channels: 1, kernel: 4, stride: 2, padding: 1 }],
};

export const CNN_PROFILES: Record<'paper' | 'appendix' | 'small', CnnDecoderConfig> = {
  /** The sizes of the report authors' code. */
  paper: PAPER,
  appendix: APPENDIX,
  /**
   * The same geometry with every width / 8 (readin 8 x 18 x 32): a 40M-weight readin instead of 79M
   * halves the memory read per frame (batch-1 decode ~14 -> ~9 ms on 2 CPU cores at 8,600 neurons)
   * and the training step.
   */
  small: scaleProfile(PAPER, 8, 8),
};

/** A profile with every hidden width divided by `factor` (at least 16; the output channel stays 1). */
export function scaleProfile(p: CnnDecoderConfig, factor: number, readinFactor = factor): CnnDecoderConfig {
  const scale = (c: number, f: number): number => Math.max(1, Math.round(c / f));
  return {
    ...p,
    readin: [scale(p.readin[0], readinFactor), p.readin[1], p.readin[2]],
    core: p.core.map((l, i) => ({ ...l, channels: i === p.core.length - 1 ? 1 : Math.max(16, scale(l.channels, factor)) })),
  };
}

/** Build the decoder on ctx: responses [batch, neurons] -> image [batch, 1, outHeight, outWidth]. */
export function cnnDecoder(ctx: LayerContext, neurons: number, batch: number | 'batch', cfg: CnnDecoderConfig): { input: Value; output: Value } {
  const { g } = ctx;
  const input = g.input(DECODER_INPUT, 'float32', [batch, neurons]);
  const [c0, h0, w0] = cfg.readin;
  let h = g.scope('readin', () => {
    let r = linear(ctx, input, c0 * h0 * w0, { name: 'fc' });
    r = batchNorm(ctx, r, { name: 'bn' });
    r = leakyRelu(ctx, r, cfg.leakySlope);
    r = dropout(ctx, r, cfg.readinDropout);
    return reshape(ctx, r, [-1, c0, h0, w0]);
  });
  h = g.scope('core', () => {
    let x = h;
    cfg.core.forEach((l, i) => {
      x = g.scope(`layer${i}`, () => {
        let y = convTranspose2d(ctx, x, l.channels, { kernel: l.kernel, stride: l.stride, padding: l.padding });
        if (i < cfg.core.length - 1) {
          y = batchNorm(ctx, y);
          y = relu(ctx, y);
          y = dropout(ctx, y, cfg.coreDropout);
        }
        return y;
      });
    });
    return x;
  });
  return { input, output: centerCrop(ctx, h, cfg.outHeight, cfg.outWidth) };
}
