import { type Graph, type Value, tensor } from '../../models/onnx/index.js';

/**
 * Optimizers as graph nodes: each step's update is computed inside ONNX Runtime, next to the
 * gradients, and returned as new parameter and state values.
 */
export interface ParamGroup {
  /** Parameters whose name starts with this prefix or matches this pattern; the first matching group wins. */
  match: string | RegExp;
  lr: number;
  weightDecay?: number;
  /** Elementwise gradient clamp to [-clamp, clamp] before the update (the GAN generator's [-1, 1]). */
  clamp?: number;
  /** Not trained: kept as constants in the training graph. */
  frozen?: boolean;
  /**
   * Not trained here but changing between steps: graph inputs fed every step (the GAN's discriminator
   * inside the generator's step, fed from the discriminator's own session).
   */
  external?: boolean;
}

export interface OptimizerConfig {
  kind: 'adamw' | 'sgd';
  beta1?: number;
  beta2?: number;
  eps?: number;
  /** SGD momentum. */
  momentum?: number;
}

export const groupOf = (groups: readonly ParamGroup[], name: string): number =>
  groups.findIndex((gr) => (typeof gr.match === 'string' ? name.startsWith(gr.match) : gr.match.test(name)));

/** Every optimizer setting filled in: the one place that says what the defaults are. */
export interface ResolvedOptimizer {
  kind: 'adamw' | 'sgd';
  beta1: number;
  beta2: number;
  eps: number;
  momentum: number;
}

export const DEFAULT_OPTIMIZER: ResolvedOptimizer = { kind: 'adamw', beta1: 0.9, beta2: 0.999, eps: 1e-8, momentum: 0.9 };

export const resolveOptimizer = (o?: OptimizerConfig): ResolvedOptimizer => ({ ...DEFAULT_OPTIMIZER, ...Object.fromEntries(Object.entries(o ?? {}).filter(([, v]) => v !== undefined)) });

export { optimizerStateNames as stateNames } from './names.js';

export interface UpdateNodes {
  param: Value;
  state: Value[];
}

/**
 * One parameter's update. AdamW (decoupled weight decay, PyTorch's form):
 *   m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;  p = p (1 - lr wd) - lr (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps)
 * (computed with the corrections folded into scalars, below)
 * SGD with momentum (PyTorch's form, coupled weight decay): b = mu b + (g + wd p);  p = p - lr b.
 */
export function updateNodes(
  g: Graph,
  cfg: ResolvedOptimizer,
  p: Value,
  grad: Value,
  state: Value[],
  lr: Value,
  stepV: Value,
  group: ParamGroup,
  /** Names for the new parameter and state values (graph outputs, named at their op: no copies). */
  names: { param: string; state: string[] },
): UpdateNodes {
  const c = (name: string, v: number): Value => g.initializer(name, tensor(p.dtype, [], [v]));
  const gc = group.clamp !== undefined ? g.op('Clip', [grad, c('clamp_lo', -group.clamp), c('clamp_hi', group.clamp)]) : grad;
  const wd = group.weightDecay ?? 0;
  if (cfg.kind === 'sgd') {
    const mu = cfg.momentum;
    const withDecay = wd ? g.op('Add', [gc, g.op('Mul', [p, c('wd', wd)])]) : gc;
    const buf = g.op('Add', [g.op('Mul', [state[0], c('mu', mu)]), withDecay], {}, { name: names.state[0] });
    return { param: g.op('Sub', [p, g.op('Mul', [lr, buf])], {}, { name: names.param }), state: [buf] };
  }
  const { beta1: b1, beta2: b2, eps } = cfg;
  const one = c('one', 1);
  const m = g.op('Add', [g.op('Mul', [state[0], c('b1', b1)]), g.op('Mul', [gc, c('one_minus_b1', 1 - b1)])], {}, { name: names.state[0] });
  const v = g.op('Add', [g.op('Mul', [state[1], c('b2', b2)]), g.op('Mul', [g.op('Mul', [gc, gc]), c('one_minus_b2', 1 - b2)])], {}, { name: names.state[1] });
  // Bias corrections folded into two scalars (same result as PyTorch's form, fewer full-size
  // temporaries - they dominate memory for the paper CNN's 1.3 GB readin):
  //   step = lr sqrt(1-b2^t) / (1-b1^t),  eps' = eps sqrt(1-b2^t),  p -= step m / (sqrt(v) + eps').
  const sqrtBc2 = g.op('Sqrt', [g.op('Sub', [one, g.op('Pow', [c('b2', b2), stepV])])]);
  const stepSize = g.op('Div', [g.op('Mul', [lr, sqrtBc2]), g.op('Sub', [one, g.op('Pow', [c('b1', b1), stepV])])]);
  const epsHat = g.op('Mul', [c('eps', eps), sqrtBc2]);
  const upd = g.op('Div', [g.op('Mul', [m, stepSize]), g.op('Add', [g.op('Sqrt', [v]), epsHat])]);
  const decayed = wd ? g.op('Mul', [p, g.op('Sub', [one, g.op('Mul', [lr, c('wd', wd)])])]) : p;
  return { param: g.op('Sub', [decayed, upd], {}, { name: names.param }), state: [m, v] };
}
