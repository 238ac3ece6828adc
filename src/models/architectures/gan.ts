import { resizeArea } from '../../datasets/image-ops.js';
import { batchNorm, conv2d, convTranspose2d, dropout, int64s, leakyRelu, linear, relu, reshape, resizeImage, scalar, sigmoid, type LayerContext } from '../layers.js';
import { GraphError, tensor, type Value } from '../onnx/index.js';
import { anchoredResidual, DECODER_INPUT, ridgeImage, type RidgeAnchor } from './ridge.js';

/**
 * The report's GAN decoder (GAN decoder with MEI readin): a readin that turns the
 * response vector into a [C, H, W] tensor, a stride-1 generator core to one channel, and a
 * discriminator used only in training.
 *
 * MEI readin: a context MLP shared by every neuron maps the neuron's response (plus, for the "C"
 * ablation, its (x, y) position) to an H x W map, which multiplies that neuron's MEI; dropout2d over
 * neurons, a 1x1 conv over neurons to C channels, BN, LeakyReLU. The readin uses the neurons whose
 * MEIs it holds: the bundle's input stays the full response vector and the graph gathers them.
 */
export interface GanConfig {
  /** 'mei': grid network x MEIs; 'grid': the grid network's maps alone (no MEIs); 'fc': fully connected. */
  readin: 'mei' | 'grid' | 'fc';
  readinChannels: number;
  /**
   * The MEI/grid readin works on a grid this many times coarser than the image (MEIs area-averaged to
   * it) and its C channels are upsampled bilinearly in the graph: the readin's cost, K x (context + C) x
   * grid pixels per frame, falls by the square. Absent (the report's profiles): the full-size readin;
   * left out rather than 1 so that runs saved before it existed resume with the same recorded config.
   */
  readinDownsample?: number;
  /** Context MLP hidden sizes (1 -> ... -> grid pixels). */
  context: number[];
  readinDropout: number;
  /** Generator convs after the readin: output channels and kernel (stride 1, same padding); last has 1 channel. */
  core: { channels: number; kernel: number }[];
  coreDropout: number;
  /** Discriminator convs: channels, kernel, stride, padding. */
  disc: { channels: number; kernel: number; stride: number; padding: number }[];
  discDropout: number;
  leakySlope: number;
  height: number;
  width: number;
  /** "C" ablation: neuron coordinates appended to the context input. */
  coordinates: boolean;
}

const PAPER: GanConfig = {
  readin: 'mei',
  readinChannels: 480,
  context: [8, 128],
  readinDropout: 0.15,
  core: [
    { channels: 480, kernel: 7 },
    { channels: 256, kernel: 5 },
    { channels: 256, kernel: 5 },
    { channels: 128, kernel: 3 },
    { channels: 64, kernel: 3 },
    { channels: 1, kernel: 3 },
  ],
  coreDropout: 0.35,
  disc: [
    { channels: 256, kernel: 7, stride: 2, padding: 2 },
    { channels: 256, kernel: 5, stride: 1, padding: 2 },
    { channels: 128, kernel: 3, stride: 1, padding: 1 },
    { channels: 64, kernel: 3, stride: 1, padding: 1 },
    { channels: 64, kernel: 3, stride: 1, padding: 1 },
  ],
  discDropout: 0.3,
  leakySlope: 0.01,
  height: 36,
  width: 64,
  coordinates: false,
};

export const GAN_PROFILES: Record<'paper' | 'small' | 'realtime', GanConfig> = {
  paper: PAPER,
  /**
   * Real time on 2 CPU cores (batch-1 decode under ~10 ms with 512 MEI neurons): 32 readin channels,
   * a 32-wide context layer, a k5 first core layer at 1/15 of the paper's width, the discriminator at 1/8.
   */
  small: {
    ...PAPER,
    readinChannels: 32,
    context: [8, 32],
    core: [
      { channels: 32, kernel: 5 },
      { channels: 16, kernel: 5 },
      { channels: 16, kernel: 3 },
      { channels: 16, kernel: 3 },
      { channels: 8, kernel: 3 },
      { channels: 1, kernel: 3 },
    ],
    disc: PAPER.disc.map((l) => ({ ...l, channels: l.channels / 8 })),
  },
  /**
   * Decode cost near the CNN's (bench:serve's gan-realtime): the readin on a 9 x 16 grid (4x coarser)
   * with 16 channels and a 16-wide context layer, then three 16-channel k3 layers at full size. The
   * readin is what made the small GAN ~7x the CNN's cost per frame: K full-size maps per frame.
   */
  realtime: {
    ...PAPER,
    readinChannels: 16,
    readinDownsample: 4,
    context: [8, 16],
    core: [
      { channels: 16, kernel: 3 },
      { channels: 16, kernel: 3 },
      { channels: 16, kernel: 3 },
      { channels: 1, kernel: 3 },
    ],
    disc: PAPER.disc.map((l) => ({ ...l, channels: l.channels / 8 })),
  },
};

export interface MeiReadinInput {
  /** [K, H, W] MEIs of the readin's neurons (unused by the 'grid' readin). */
  meis: Float32Array;
  /** Their indices in the response vector. */
  neuronIndex: number[];
  /** "C" ablation: [K, 2] neuron coordinates (normalised). */
  coordinates?: Float32Array;
}

/** The readin's grid: the image's, or readinDownsample (a whole number) times coarser, rounded, at least 1 x 1. */
function readinGrid(cfg: GanConfig): { height: number; width: number } {
  const f = cfg.readinDownsample ?? 1;
  if (!(Number.isInteger(f) && f >= 1)) throw new GraphError(`GAN readinDownsample ${f}: must be a whole number, 1 or more`);
  return { height: Math.max(1, Math.round(cfg.height / f)), width: Math.max(1, Math.round(cfg.width / f)) };
}

/** responses [B, n] -> [B, C, H, W]. */
function meiReadin(ctx: LayerContext, responses: Value, cfg: GanConfig, m: MeiReadinInput, scope: string): Value {
  const { g } = ctx;
  return g.scope(scope, () => {
    const K = m.neuronIndex.length;
    const { height: gridH, width: gridW } = readinGrid(cfg);
    const withMeis = cfg.readin === 'mei';
    if (withMeis && m.meis.length !== K * cfg.height * cfg.width) throw new GraphError(`MEI readin: ${m.meis.length} MEI values for ${K} neurons of ${cfg.height}x${cfg.width}`);
    const picked = g.op('Gather', [responses, g.initializer('neuron_index', tensor('int64', [K], m.neuronIndex))], { axis: 1 });
    // Every (image, neuron) pair is one row of the shared context MLP.
    let rows = reshape(ctx, picked, [-1, 1]);
    if (cfg.coordinates) {
      if (!m.coordinates) throw new GraphError('MEI readin: the coordinates ablation needs neuron coordinates');
      const coords = g.initializer('coordinates', tensor('float32', [1, K, 2], m.coordinates));
      // [B, K, 1] x 0 + [1, K, 2]: the coordinates broadcast to every image of the batch (Expand would
      // need the batch size as a constant shape, which an exported graph with a free batch axis lacks).
      const zeros = g.op('Mul', [g.op('Unsqueeze', [picked, int64s(g, 'axis', [2])]), scalar(g, 'zero', 0)]);
      const tiled = g.op('Add', [zeros, coords]);
      rows = g.op('Concat', [rows, reshape(ctx, tiled, [-1, 2])], { axis: 1 });
    }
    cfg.context.forEach((width, i) => {
      rows = g.scope(`context${i}`, () => dropout(ctx, leakyRelu(ctx, batchNorm(ctx, linear(ctx, rows, width)), cfg.leakySlope), cfg.readinDropout));
    });
    const maps = reshape(ctx, g.scope('context_out', () => linear(ctx, rows, gridH * gridW)), [-1, K, gridH, gridW]);
    // The grid network's maps, modulated by each neuron's MEI (or alone: the 'grid' readin).
    const modulated = withMeis ? g.op('Mul', [maps, g.initializer('meis', tensor('float32', [K, gridH, gridW], coarseMeis(m.meis, K, cfg, gridH, gridW)))]) : maps;
    let x = dropout(ctx, modulated, cfg.readinDropout, { channelwise: true });
    x = conv2d(ctx, x, cfg.readinChannels, { kernel: 1, bias: false, name: 'mix' });
    return resizeImage(ctx, leakyRelu(ctx, batchNorm(ctx, x), cfg.leakySlope), cfg.height, cfg.width);
  });
}

/** K full-size MEIs area-averaged to the readin's h x w grid (unchanged at full size). */
function coarseMeis(meis: Float32Array, K: number, cfg: GanConfig, h: number, w: number): Float32Array {
  const { height: H, width: W } = cfg;
  if (h === H && w === W) return meis;
  const out = new Float32Array(K * h * w);
  for (let k = 0; k < K; k++) resizeArea(meis.subarray(k * H * W, (k + 1) * H * W), H, W, h, w, out.subarray(k * h * w, (k + 1) * h * w));
  return out;
}

/** The FC alternative: Linear(n -> C x H/4 x W/4), BN, LeakyReLU, dropout, then a k4 s4 transposed conv to H x W. */
function fcReadin(ctx: LayerContext, responses: Value, cfg: GanConfig, scope: string): Value {
  const { g } = ctx;
  return g.scope(scope, () => {
    const h4 = cfg.height / 4;
    const w4 = cfg.width / 4;
    let x = dropout(ctx, leakyRelu(ctx, batchNorm(ctx, linear(ctx, responses, cfg.readinChannels * h4 * w4, { name: 'fc' })), cfg.leakySlope), cfg.readinDropout);
    x = reshape(ctx, x, [-1, cfg.readinChannels, h4, w4]);
    return leakyRelu(ctx, batchNorm(ctx, convTranspose2d(ctx, x, cfg.readinChannels, { kernel: 4, stride: 4 })), cfg.leakySlope);
  });
}

/** Session k's readin scope: `readin` alone, `readin_<k>` in multi-session (B-All) models. */
export const ganReadinName = (k: number, sessions: number): string => (sessions > 1 ? `readin_${k}` : 'readin');

function readin(ctx: LayerContext, input: Value, cfg: GanConfig, mei: MeiReadinInput | undefined, scope: string): Value {
  if (cfg.readin === 'fc') return fcReadin(ctx, input, cfg, scope);
  if (!mei) throw new GraphError(`the ${cfg.readin} readin needs its neurons (and, for 'mei', their MEIs: cortexcast meis)`);
  return meiReadin(ctx, input, cfg, mei, scope);
}

/** Parameter prefix of the core's last (one-channel) layer. */
const lastCoreLayer = (cfg: GanConfig): string => `core/layer${cfg.core.length - 1}/`;

/** The stride-1 core shared by every session: [B, C, H, W] -> [B, 1, H, W]. */
function generatorCore(ctx: LayerContext, x: Value, cfg: GanConfig): Value {
  const { g } = ctx;
  return g.scope('core', () => {
    let y = x;
    cfg.core.forEach((l, i) => {
      y = g.scope(`layer${i}`, () => {
        let z = conv2d(ctx, y, l.channels, { kernel: l.kernel, padding: (l.kernel - 1) / 2 });
        if (i < cfg.core.length - 1) z = dropout(ctx, relu(ctx, batchNorm(ctx, z)), cfg.coreDropout);
        return z;
      });
    });
    return y;
  });
}

/**
 * Readin features of one session, plus (with a ridge anchor) the ridge estimate as one more channel,
 * so the core refines a linear reconstruction instead of drawing one from MEI maps alone.
 */
function sessionFeatures(ctx: LayerContext, input: Value, cfg: GanConfig, s: GanSessionInput, scope: string): { features: Value; base?: Value } {
  const features = readin(ctx, input, cfg, s.mei, scope);
  if (!s.anchor) return { features };
  if (s.anchor.channels !== 1) throw new GraphError(`${scope}: the GAN's ridge anchor is the image alone (${s.anchor.channels} read-out channels given)`);
  const base = ridgeImage(ctx, input, s.anchor, `${scope}_anchor`);
  return { features: ctx.g.op('Concat', [features, base], { axis: 1 }), base };
}

/** What the generator knows about one session: its neuron count, MEIs and optional ridge anchor. */
export interface GanSessionInput {
  neurons: number;
  mei?: MeiReadinInput;
  /** Ridge-anchored generator: output = ridge estimate + core(readin, ridge estimate), the core's last layer starting at 0. */
  anchor?: RidgeAnchor;
}

/**
 * The generator of one session: responses [B, neurons] -> z-scored image [B, 1, H, W]. `session`
 * names the readin of session k of a multi-session model, so it exports alone with the shared core.
 * `base` is the ridge image of an anchored generator (a fed input when the anchor has out-of-fold
 * train estimates and ctx trains).
 */
export function ganGenerator(
  ctx: LayerContext,
  batch: number | 'batch',
  cfg: GanConfig,
  s: GanSessionInput,
  session: { index: number; count: number } = { index: 0, count: 1 },
): { input: Value; output: Value; base?: Value } {
  const input = ctx.g.input(DECODER_INPUT, 'float32', [batch, s.neurons]);
  const { features, base } = sessionFeatures(ctx, input, cfg, s, ganReadinName(session.index, session.count));
  const out = generatorCore(ctx, features, cfg);
  return { input, output: base ? anchoredResidual(ctx, base, out, lastCoreLayer(cfg)) : out, base };
}

/**
 * B-All: one readin per session (input `responses_<k>`), the sessions' readin outputs concatenated
 * on the batch axis (session k's rows at k * batch) through one shared core.
 */
export function multiSessionGenerator(ctx: LayerContext, batch: number, sessions: GanSessionInput[], cfg: GanConfig): { inputs: Value[]; output: Value; bases?: Value[] } {
  const { g } = ctx;
  if (sessions.length === 1) {
    const m = ganGenerator(ctx, batch, cfg, sessions[0]);
    return { inputs: [m.input], output: m.output, bases: m.base && [m.base] };
  }
  if (new Set(sessions.map((s) => !!s.anchor)).size > 1) throw new GraphError('B-All: either every session has a ridge anchor or none has');
  const inputs = sessions.map((s, k) => g.input(`${DECODER_INPUT}_${k}`, 'float32', [batch, s.neurons]));
  const parts = inputs.map((x, k) => sessionFeatures(ctx, x, cfg, sessions[k], ganReadinName(k, sessions.length)));
  const out = generatorCore(ctx, g.op('Concat', parts.map((p) => p.features), { axis: 0 }), cfg);
  if (!sessions[0].anchor) return { inputs, output: out };
  const bases = parts.map((p) => p.base!);
  return { inputs, output: anchoredResidual(ctx, g.op('Concat', bases, { axis: 0 }), out, lastCoreLayer(cfg)), bases };
}

/**
 * The discriminator: image [sessions * B, 1, H, W] -> probability of "real" [sessions * B, 1], built
 * under scope `disc`. One trunk; one linear head per session (`head` alone, `head_<k>` for B-All),
 * session k's rows at k * B.
 */
export function ganDiscriminator(ctx: LayerContext, image: Value, cfg: GanConfig, sessions = 1): Value {
  const { g } = ctx;
  return g.scope('disc', () => {
    let x = image;
    cfg.disc.forEach((l, i) => {
      x = g.scope(`layer${i}`, () => dropout(ctx, relu(ctx, batchNorm(ctx, conv2d(ctx, x, l.channels, { kernel: l.kernel, stride: l.stride, padding: l.padding }))), cfg.discDropout));
    });
    const [rows, c, h, w] = x.shape as number[];
    const flat = reshape(ctx, x, [-1, c * h * w]);
    if (sessions === 1) return sigmoid(ctx, linear(ctx, flat, 1, { name: 'head' }));
    const per = rows / sessions;
    const heads = Array.from({ length: sessions }, (_, k) => {
      const part = g.op('Slice', [flat, int64s(g, 'start', [k * per]), int64s(g, 'end', [(k + 1) * per]), int64s(g, 'axis', [0])]);
      return linear(ctx, part, 1, { name: `head_${k}` });
    });
    return sigmoid(ctx, g.op('Concat', heads, { axis: 0 }));
  });
}
