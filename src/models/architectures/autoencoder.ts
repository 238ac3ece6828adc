import { batchNorm, conv2d, convTranspose2d, dropout, fixedDim, leakyRelu, linear, reduce, reshape, scalar, sigmoid, type LayerContext } from '../layers.js';
import { GraphError, tensor, type Value } from '../onnx/index.js';

/**
 * Latent-space decoders (the report's IV-D): an image autoencoder trained on images alone, whose
 * frozen decoder turns a latent read in from responses into the image. Two latent spaces:
 * - 'vae': a KL-regularised convolutional VAE trained by cortexcast, 64 x 64 grey images to a
 *   4 x 8 x 8 latent (the Stable Diffusion VAE's geometry at 64 x 64, which cannot be had here);
 * - 'features': an intermediate feature map of a pretrained image network (MobileNetV2 from nsfwjs),
 *   with a transposed-conv decoder trained on images (the report's ResNet50 variant).
 * Images inside the autoencoder are grey levels in [0, 1]; the chained decoder converts to and from
 * a dataset's z-scored pixels with its own statistics, so one autoencoder serves any dataset.
 */

export interface VaeConfig {
  /** Channels of the encoder's three stride-2 stages; the decoder mirrors them. */
  channels: [number, number, number];
  /** Latent channels (the spatial size is the image's / 8). */
  latentChannels: number;
  /** Square image side the autoencoder works at. */
  size: number;
}

export const VAE_PROFILES: Record<'small' | 'paper' | 'realtime', VaeConfig> = {
  /** ~0.4 M weights; its decoder costs ~85 M multiply-adds per frame (three transposed convolutions up to 64 x 64). */
  small: { channels: [32, 64, 128], latentChannels: 4, size: 64 },
  paper: { channels: [64, 128, 256], latentChannels: 4, size: 64 },
  /**
   * The same 4x8x8 latent with a quarter of the widths: the decoder costs ~5.5 M multiply-adds per frame
   * (the small one's made latent-vae decode at ~6 ms a frame on 2 cores, a quarter of 16 streams x 30 Hz).
   */
  realtime: { channels: [8, 16, 32], latentChannels: 4, size: 64 },
};

const SLOPE = 0.1;

/** Encoder: image [B, 1, S, S] in [0, 1] -> { mean, logVariance } each [B, latentChannels, S/8, S/8]. */
export function vaeEncoder(ctx: LayerContext, image: Value, cfg: VaeConfig): { mean: Value; logVariance: Value } {
  const { g } = ctx;
  return g.scope('encoder', () => {
    let x = leakyRelu(ctx, conv2d(ctx, image, cfg.channels[0], { kernel: 3, padding: 1, name: 'stem' }), SLOPE);
    cfg.channels.forEach((c, i) => (x = leakyRelu(ctx, conv2d(ctx, x, c, { kernel: 4, stride: 2, padding: 1, name: `down${i}` }), SLOPE)));
    const L = cfg.latentChannels;
    const both = conv2d(ctx, x, 2 * L, { kernel: 3, padding: 1, name: 'moments' });
    const [h, w] = [fixedDim(both, 2, 'vae'), fixedDim(both, 3, 'vae')];
    const half = (from: number, name: string): Value =>
      g.op('Slice', [both, g.initializer(`${name}_starts`, tensor('int64', [1], [from])), g.initializer(`${name}_ends`, tensor('int64', [1], [from + L])), g.initializer(`${name}_axes`, tensor('int64', [1], [1]))]);
    const mean = half(0, 'mean');
    // Clamped: an exp(logVariance) that overflows in the first steps would end the run.
    const logVariance = g.op('Clip', [half(L, 'logvar'), scalar(g, 'logvar_min', -12), scalar(g, 'logvar_max', 6)]);
    if (h * 8 !== cfg.size || w * 8 !== cfg.size) throw new GraphError(`vae encoder: ${cfg.size}px image gave a ${h}x${w} latent`);
    return { mean, logVariance };
  });
}

/** Decoder: latent [B, latentChannels, S/8, S/8] -> image [B, 1, S, S] in [0, 1]; parameters under `decoder/`. */
export function vaeDecoder(ctx: LayerContext, latent: Value, cfg: VaeConfig): Value {
  const { g } = ctx;
  return g.scope('decoder', () => {
    const [c0, c1, c2] = cfg.channels;
    let x = leakyRelu(ctx, conv2d(ctx, latent, c2, { kernel: 3, padding: 1, name: 'stem' }), SLOPE);
    [c2, c1, c0].forEach((c, i) => (x = leakyRelu(ctx, convTranspose2d(ctx, x, c, { kernel: 4, stride: 2, padding: 1, name: `up${i}` }), SLOPE)));
    return sigmoid(ctx, conv2d(ctx, x, 1, { kernel: 3, padding: 1, name: 'out' }));
  });
}

/** The reparameterised sample mean + exp(logVariance / 2) * noise (noise ~ N(0, 1), fed per step). */
export function vaeSample(ctx: LayerContext, m: { mean: Value; logVariance: Value }, noise: Value): Value {
  const { g } = ctx;
  const sd = g.op('Exp', [g.op('Mul', [m.logVariance, scalar(g, 'half', 0.5)])]);
  return g.op('Add', [m.mean, g.op('Mul', [sd, noise])]);
}

/** KL(q(z|x) || N(0, 1)) averaged over latent elements and the batch: 0.5 (mean^2 + var - log var - 1). */
export function vaeKl(ctx: LayerContext, m: { mean: Value; logVariance: Value }): Value {
  const { g } = ctx;
  const terms = g.op('Sub', [g.op('Add', [g.op('Mul', [m.mean, m.mean]), g.op('Exp', [m.logVariance])]), g.op('Add', [m.logVariance, scalar(g, 'one', 1)])]);
  return g.op('Mul', [reduce(ctx, 'ReduceMean', terms, terms.shape.map((_, i) => i), false), scalar(g, 'half', 0.5)]);
}

/**
 * Decoder of an image network's feature map [B, C, h, w] -> image logits [B, 1, h * 2^k, w * 2^k]:
 * k stride-2 transposed convolutions, then full-resolution convolutions to one channel, batch norm and
 * LeakyReLU(0.1) after each but the last - the report's Table III design, scaled to a map that is
 * `upsample` times smaller than the image (the report's 14 x 14 -> 224 x 224 used four x2 steps).
 */
export interface FeatureDecoderConfig {
  /** Channels after each x2 transposed convolution (log2(upsample) of them). */
  up: number[];
  /** Channels of the full-resolution convolutions before the one-channel output. */
  refine: number[];
}

export const FEATURE_DECODER_PROFILES: Record<'small' | 'paper', (upsample: number) => FeatureDecoderConfig> = {
  small: (u) => ({ up: halvings(128, u), refine: [32, 16] }),
  paper: (u) => ({ up: halvings(768, u), refine: [128, 64, 32, 16] }),
};

function halvings(first: number, upsample: number): number[] {
  const k = Math.log2(upsample);
  if (!Number.isInteger(k) || k < 0) throw new GraphError(`feature decoder: upsampling ${upsample} is not a power of two`);
  return Array.from({ length: k }, (_, i) => Math.max(16, first >> i));
}

export function featureDecoder(ctx: LayerContext, features: Value, cfg: FeatureDecoderConfig): Value {
  const { g } = ctx;
  return g.scope('decoder', () => {
    let x = features;
    const block = (y: Value): Value => leakyRelu(ctx, batchNorm(ctx, y), SLOPE);
    cfg.up.forEach((c, i) => (x = g.scope(`up${i}`, () => block(convTranspose2d(ctx, x, c, { kernel: 4, stride: 2, padding: 1 })))));
    cfg.refine.forEach((c, i) => (x = g.scope(`refine${i}`, () => block(conv2d(ctx, x, c, { kernel: i === 0 ? 5 : 3, padding: i === 0 ? 2 : 1 })))));
    return conv2d(ctx, x, 1, { kernel: 1, name: 'out' });
  });
}

/** The report's SD-VAE readin: MLP with BN, ReLU and dropout 0.5 after each hidden layer, then a linear map to the latent. */
export interface MlpReadinConfig {
  hidden: number[];
  dropout: number;
}

export const MLP_READIN_PROFILES: Record<'small' | 'paper', MlpReadinConfig> = {
  /** n -> 2048 -> 1024 -> latent: 17.6 M weights at 8,600 neurons (~6 ms a frame on 2 cores). */
  small: { hidden: [2048, 1024], dropout: 0.5 },
  /** The report's n -> 4096 -> 2048 -> 1024 -> 256. */
  paper: { hidden: [4096, 2048, 1024], dropout: 0.5 },
};

/** Responses [B, n] -> latent [B, C, h, w]; parameters under `readin/`. */
export function mlpReadin(ctx: LayerContext, responses: Value, latent: readonly [number, number, number], cfg: MlpReadinConfig): Value {
  const { g } = ctx;
  return g.scope('readin', () => {
    let x = responses;
    cfg.hidden.forEach((h, i) => (x = g.scope(`hidden${i}`, () => dropout(ctx, g.op('Relu', [batchNorm(ctx, linear(ctx, x, h))]), cfg.dropout))));
    return reshape(ctx, linear(ctx, x, latent[0] * latent[1] * latent[2], { name: 'out' }), [-1, ...latent]);
  });
}

/**
 * The report's ResNet readin (Table IV): Linear to [C0, h, w], then four convolutions to the feature
 * map's channels, each preceded by batch norm and LeakyReLU(0.1).
 */
export interface ConvReadinConfig {
  /**
   * Channels of the linear map's output (the report: 128 at 14 x 14), or 'fit' to give it as many
   * channels as keep channels x h x w near `linearOutputs` (a stride-8 map would otherwise make the
   * Linear layer 8,600 x 18,432).
   */
  first: number | 'fit';
  linearOutputs?: number;
  /** Output channels of the first three convolutions (the fourth has the latent's); kernels 5, 5, 1, 1. */
  hidden: [number, number, number];
  dropout: number;
}

export const CONV_READIN_PROFILES: Record<'small' | 'paper', ConvReadinConfig> = {
  /** Linear to ~4,608 values (32 x 9 x 16, 8 x 18 x 32): 40 M weights at 8,600 neurons, like the small CNN's readin. */
  small: { first: 'fit', linearOutputs: 4608, hidden: [64, 128, 128], dropout: 0.2 },
  /** The report's 128 -> 256 -> 512 -> 512 -> latent. */
  paper: { first: 128, hidden: [256, 512, 512], dropout: 0.2 },
};

/** Channels of the conv readin's linear output for an h x w map. */
export const convReadinFirst = (cfg: ConvReadinConfig, h: number, w: number): number => (cfg.first === 'fit' ? Math.max(4, Math.floor((cfg.linearOutputs ?? 4608) / (h * w))) : cfg.first);

export function convReadin(ctx: LayerContext, responses: Value, latent: readonly [number, number, number], cfg: ConvReadinConfig): Value {
  const { g } = ctx;
  const [C, h, w] = latent;
  return g.scope('readin', () => {
    const first = convReadinFirst(cfg, h, w);
    let x = reshape(ctx, dropout(ctx, linear(ctx, responses, first * h * w, { name: 'fc' }), cfg.dropout), [-1, first, h, w]);
    const kernels = [5, 5, 1, 1];
    [...cfg.hidden, C].forEach((c, i) => (x = g.scope(`conv${i}`, () => conv2d(ctx, leakyRelu(ctx, batchNorm(ctx, x), SLOPE), c, { kernel: kernels[i], padding: (kernels[i] - 1) / 2 }))));
    return x;
  });
}

/** Grey levels in [0, 1] -> a dataset's z-scored pixels ((255 a - mean) / std) and back. */
export function greyToZ(ctx: LayerContext, grey: Value, pixelMean: number, pixelStd: number): Value {
  const { g } = ctx;
  return g.op('Add', [g.op('Mul', [grey, scalar(g, 'z_scale', 255 / pixelStd)]), scalar(g, 'z_shift', -pixelMean / pixelStd)]);
}
