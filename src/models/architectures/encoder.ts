import { batchNorm, conv2d, elu, fixedDim, int64s, param, reduce, reshape, scalar, type LayerContext } from '../layers.js';
import { tensor, type Value } from '../onnx/index.js';

/**
 * The report's encoding model: image [B, 1, H, W] -> predicted responses [B, N].
 * A CNN core (conv k9 without padding, then k7 layers, BN + ELU after each) shared by every
 * recording session, and one readout per session: a Gaussian readout (a learned position per neuron,
 * sampled around it while training) or a factorized one (spatial mask x feature weights).
 * Output ELU(y) + 1, a positive rate for the Poisson loss.
 */
export interface EncoderConfig {
  /** Core channels. */
  hidden: number;
  /** k7 layers after the first (k9) layer. */
  layers: number;
  firstKernel: number;
  hiddenKernel: number;
  /** Depth-separable hidden layers (1x1, depthwise kxk, 1x1), as the original code. */
  separable: boolean;
  readout: 'gaussian' | 'factorized';
  /** Initial half-ranges of readout positions and of the 2x2 sampling matrix. */
  initMu: number;
  initSigma: number;
  height: number;
  width: number;
}

export const ENCODER_INPUT = 'image';
export const ENCODER_OUTPUT = 'responses';
/** Training-only input of the Gaussian readout: eps ~ N(0, I), [batch, neurons, 2]. */
export const READOUT_NOISE = 'readout_noise';

const PAPER: EncoderConfig = { hidden: 64, layers: 3, firstKernel: 9, hiddenKernel: 7, separable: true, readout: 'gaussian', initMu: 0.3, initSigma: 0.1, height: 36, width: 64 };

export const ENCODER_PROFILES: Record<'paper' | 'small', EncoderConfig> = {
  paper: PAPER,
  /** Half the channels: a training step at batch 32 on 2 CPU cores in well under a second. */
  small: { ...PAPER, hidden: 32 },
};

/** The shared core: [B, 1, H, W] -> [B, C, H - k1 + 1, W - k1 + 1]. */
export function encoderCore(ctx: LayerContext, image: Value, cfg: EncoderConfig): Value {
  const { g } = ctx;
  return g.scope('core', () => {
    let x = g.scope('layer0', () => elu(ctx, batchNorm(ctx, conv2d(ctx, image, cfg.hidden, { kernel: cfg.firstKernel, padding: 0 }))));
    const pad = (cfg.hiddenKernel - 1) / 2;
    for (let l = 1; l <= cfg.layers; l++) {
      x = g.scope(`layer${l}`, () => {
        let y: Value;
        if (cfg.separable) {
          y = conv2d(ctx, x, cfg.hidden, { kernel: 1, bias: false, name: 'in' });
          y = conv2d(ctx, y, cfg.hidden, { kernel: cfg.hiddenKernel, padding: pad, groups: cfg.hidden, bias: false, name: 'spatial' });
          y = conv2d(ctx, y, cfg.hidden, { kernel: 1, bias: false, name: 'out' });
        } else y = conv2d(ctx, x, cfg.hidden, { kernel: cfg.hiddenKernel, padding: pad, bias: false });
        return elu(ctx, batchNorm(ctx, y));
      });
    }
    return x;
  });
}

/** The name of the first conv's weight (the Laplace smoothness penalty's argument). */
export const FIRST_CONV_WEIGHT = 'core/layer0/conv/weight';

const fixed = (v: Value, axis: number): number => fixedDim(v, axis, v.name);

/**
 * Bilinear sample of features [B, C, H, W] at positions in [-1, 1]^2 (x = column, y = row, corners
 * at +-1 as grid_sample with align_corners). Positions [N, 2] (the same for every image: Gather) or
 * [B, N, 2] (sampled per image: GatherElements). Returns [B, C, N]. Built from standard ops so the
 * gradient reaches both the features and the positions (through the interpolation weights).
 */
export function bilinearSample(ctx: LayerContext, features: Value, positions: Value): Value {
  const { g } = ctx;
  return g.scope('bilinear', () => {
    const C = fixed(features, 1);
    const H = fixed(features, 2);
    const W = fixed(features, 3);
    const perImage = positions.shape.length === 3;
    const last = positions.shape.length - 1;
    const sc = (name: string, v: number): Value => scalar(g, name, v, positions.dtype === 'float64' ? 'float64' : 'float32');
    const coord = (i: number, size: number): { lo: Value; frac: Value } => {
      const p = g.op('Squeeze', [g.op('Slice', [positions, int64s(g, 'start', [i]), int64s(g, 'end', [i + 1]), int64s(g, 'axis', [last])]), int64s(g, 'axes', [last])]);
      const pix = g.op('Mul', [g.op('Add', [p, sc('one', 1)]), sc('half_size', (size - 1) / 2)]);
      const lo = g.op('Clip', [g.op('Floor', [pix]), sc('min', 0), sc('max', size - 2)]);
      return { lo, frac: g.op('Sub', [pix, lo]) };
    };
    const x = coord(0, W);
    const y = coord(1, H);
    const flat = reshape(ctx, features, [0, C, H * W]);
    const base = g.op('Cast', [g.op('Add', [g.op('Mul', [y.lo, sc('row', W)]), x.lo])], { to: 7 });
    const one = (v: Value): Value => g.op('Sub', [sc('one', 1), v]);
    const corners: [offset: number, weight: Value][] = [
      [0, g.op('Mul', [one(x.frac), one(y.frac)])],
      [1, g.op('Mul', [x.frac, one(y.frac)])],
      [W, g.op('Mul', [one(x.frac), y.frac])],
      [W + 1, g.op('Mul', [x.frac, y.frac])],
    ];
    let out: Value | undefined;
    for (const [offset, weight] of corners) {
      const idx = offset ? g.op('Add', [base, g.initializer('offset', tensor('int64', [], [offset]))]) : base;
      let s: Value;
      let w = weight;
      if (perImage) {
        const B = fixed(positions, 0);
        const N = fixed(positions, 1);
        const expanded = g.op('Expand', [g.op('Unsqueeze', [idx, int64s(g, 'axes', [1])]), int64s(g, 'shape', [B, C, N])]);
        s = g.op('GatherElements', [flat, expanded], { axis: 2 });
        w = g.op('Unsqueeze', [weight, int64s(g, 'axes', [1])]);
      } else s = g.op('Gather', [flat, idx], { axis: 2 });
      const term = g.op('Mul', [s, w]);
      out = out ? g.op('Add', [out, term]) : term;
    }
    return out!;
  });
}

export interface ReadoutOptions {
  name?: string;
  /** Per-neuron mean response: the bias starts where ELU(b) + 1 equals it. */
  meanResponse?: Float32Array;
  /** Gaussian readout: starting positions [N, 2] (default U(+-initMu)). */
  initialPositions?: Float32Array;
}

/** Initial readout biases: ELU(b) + 1 = the neuron's mean response. */
function initialBias(n: number, mean?: Float32Array): Float32Array {
  const b = new Float32Array(n);
  if (mean) for (let i = 0; i < n; i++) b[i] = mean[i] >= 1 ? mean[i] - 1 : Math.log(Math.max(mean[i], 1e-3));
  return b;
}

/**
 * Gaussian readout: position mu_n, 2x2 matrix Sigma_n, feature weights w[c, n], bias b_n. In
 * training (ctx.mode 'train') positions are mu + Sigma eps with eps from the `readout_noise` input,
 * clamped to [-1, 1]; in eval the mean position. Returns the pre-activation [B, N].
 */
export function gaussianReadout(ctx: LayerContext, features: Value, neurons: number, cfg: EncoderConfig, o: ReadoutOptions = {}): { y: Value; noise?: Value } {
  const { g, rng } = ctx;
  return g.scope(o.name ?? 'readout', () => {
    const C = fixed(features, 1);
    const mu = param(ctx, 'mu', tensor('float32', [neurons, 2], o.initialPositions ?? Float32Array.from({ length: neurons * 2 }, () => rng.uniform(-cfg.initMu, cfg.initMu))));
    const weight = param(ctx, 'features', tensor('float32', [C, neurons], new Float32Array(C * neurons).fill(1 / C)));
    const bias = param(ctx, 'bias', tensor('float32', [neurons], initialBias(neurons, o.meanResponse)));
    let positions: Value;
    let noise: Value | undefined;
    if (ctx.mode === 'train') {
      // Sigma only shapes training (eval reads at mu), so exported encoders do not carry it.
      const sigma = param(ctx, 'sigma', tensor('float32', [neurons, 2, 2], Float32Array.from({ length: neurons * 4 }, () => rng.uniform(-cfg.initSigma, cfg.initSigma))));
      const B = fixed(features, 0);
      noise = g.input(g.uniqueName(READOUT_NOISE), 'float32', [B, neurons, 2]);
      const shift = reduce(ctx, 'ReduceSum', g.op('Mul', [g.op('Unsqueeze', [noise, int64s(g, 'axes', [2])]), sigma]), [3], false);
      positions = g.op('Clip', [g.op('Add', [mu, shift]), scalar(g, 'min', -1), scalar(g, 'max', 1)]);
    } else positions = g.op('Clip', [mu, scalar(g, 'min', -1), scalar(g, 'max', 1)]);
    const sampled = bilinearSample(ctx, features, positions);
    const y = g.op('Add', [reduce(ctx, 'ReduceSum', g.op('Mul', [sampled, weight]), [1], false), bias]);
    return { y, noise };
  });
}

/** Factorized readout: a spatial mask per neuron times feature weights (Klindt et al.). */
export function factorizedReadout(ctx: LayerContext, features: Value, neurons: number, o: ReadoutOptions = {}): { y: Value } {
  const { g, rng } = ctx;
  return g.scope(o.name ?? 'readout', () => {
    const C = fixed(features, 1);
    const P = fixed(features, 2) * fixed(features, 3);
    const mask = param(ctx, 'spatial', tensor('float32', [P, neurons], Float32Array.from({ length: P * neurons }, () => rng.uniform(0, 2 / P))));
    const weight = param(ctx, 'features', tensor('float32', [C, neurons], new Float32Array(C * neurons).fill(1 / C)));
    const bias = param(ctx, 'bias', tensor('float32', [neurons], initialBias(neurons, o.meanResponse)));
    const pooled = g.op('MatMul', [reshape(ctx, features, [0, C, P]), mask]);
    return { y: g.op('Add', [reduce(ctx, 'ReduceSum', g.op('Mul', [pooled, weight]), [1], false), bias]) };
  });
}

/** ELU(y) + 1. */
export const positiveRate = (ctx: LayerContext, y: Value): Value => ctx.g.op('Add', [elu(ctx, y), scalar(ctx.g, 'one', 1)]);

/** Readout parameters whose L1 norm is penalised (the feature weights; the mask too when factorized). */
export const readoutL1Params = (params: readonly string[]): string[] => params.filter((p) => /readout[^/]*\/(features|spatial)$/.test(p));

/** One session's readout on shared features, with the output nonlinearity. */
function readoutFor(ctx: LayerContext, features: Value, neurons: number, cfg: EncoderConfig, o: ReadoutOptions): { output: Value; noise?: Value } {
  const r = cfg.readout === 'gaussian' ? gaussianReadout(ctx, features, neurons, cfg, o) : factorizedReadout(ctx, features, neurons, o);
  return { output: positiveRate(ctx, r.y), noise: (r as { noise?: Value }).noise };
}

/** The readout scope of session k: `readout` alone, `readout_<k>` in multi-session models. */
export const readoutName = (k: number, sessions: number): string => (sessions > 1 ? `readout_${k}` : 'readout');

/** One session's encoder: image -> responses (what an encoder bundle holds). */
export function encoderNet(ctx: LayerContext, batch: number | 'batch', neurons: number, cfg: EncoderConfig, o: ReadoutOptions = {}): { input: Value; output: Value; noise?: Value } {
  const input = ctx.g.input(ENCODER_INPUT, 'float32', [batch, 1, cfg.height, cfg.width]);
  return { input, ...readoutFor(ctx, encoderCore(ctx, input, cfg), neurons, cfg, o) };
}

/**
 * Several sessions, one shared core: the images of every session run through the core as one batch
 * ([sessions * batch, 1, H, W], session k's rows at k * batch), then each session's rows go to its
 * own readout.
 */
export function multiSessionEncoder(
  ctx: LayerContext,
  batch: number,
  sessions: { neurons: number; meanResponse?: Float32Array; initialPositions?: Float32Array }[],
  cfg: EncoderConfig,
): { input: Value; outputs: Value[]; noises: (Value | undefined)[] } {
  const { g } = ctx;
  const input = g.input(ENCODER_INPUT, 'float32', [batch * sessions.length, 1, cfg.height, cfg.width]);
  const features = encoderCore(ctx, input, cfg);
  const outputs: Value[] = [];
  const noises: (Value | undefined)[] = [];
  sessions.forEach((s, k) => {
    const rows = sessions.length > 1 ? g.op('Slice', [features, int64s(g, 'start', [k * batch]), int64s(g, 'end', [(k + 1) * batch]), int64s(g, 'axis', [0])]) : features;
    const r = readoutFor(ctx, rows, s.neurons, cfg, { name: readoutName(k, sessions.length), meanResponse: s.meanResponse, initialPositions: s.initialPositions });
    outputs.push(r.output);
    noises.push(r.noise);
  });
  return { input, outputs, noises };
}
