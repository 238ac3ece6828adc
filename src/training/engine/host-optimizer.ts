import type { ParamGroup, ResolvedOptimizer } from './optim.js';

export interface HostUpdate {
  /** The parameter, updated in place. */
  weights: Float32Array;
  /** Its gradient, in the chunks the graph returned (in order). */
  gradChunks: Float32Array[];
  /** Optimizer state: AdamW [m, v], SGD [momentum], updated in place. */
  state: Float32Array[];
  lr: number;
  group: ParamGroup;
  optimizer: ResolvedOptimizer;
  /** The step being taken (1-based), for AdamW's bias corrections. */
  step: number;
}

/**
 * The graph's optimizer update (optim.ts updateNodes) as one fused, in-place pass in JavaScript, for
 * parameters too large to update inside ONNX Runtime (see TrainingSpec.hostUpdateMinElements). Same
 * arithmetic as the graph: float32 learning rate, the clamp before the update, PyTorch's forms.
 */
export function hostUpdate(u: HostUpdate): void {
  const { weights: w, gradChunks, optimizer: opt, group } = u;
  const lr = Math.fround(u.lr);
  const wd = group.weightDecay ?? 0;
  const clamp = group.clamp ?? Infinity;
  const [s0, s1] = u.state;
  if (opt.kind === 'sgd') {
    const mu = opt.momentum;
    let i = 0;
    for (const grad of gradChunks)
      for (let j = 0; j < grad.length; j++, i++) {
        const gc = Math.min(clamp, Math.max(-clamp, grad[j])) + wd * w[i];
        const b = (s0[i] = mu * s0[i] + gc);
        w[i] -= lr * b;
      }
    return;
  }
  const b1 = opt.beta1;
  const b2 = opt.beta2;
  const sqrtBc2 = Math.sqrt(1 - b2 ** u.step);
  const stepSize = (lr * sqrtBc2) / (1 - b1 ** u.step);
  const epsHat = opt.eps * sqrtBc2;
  const decay = 1 - lr * wd;
  let i = 0;
  for (const grad of gradChunks)
    for (let j = 0; j < grad.length; j++, i++) {
      const gc = Math.min(clamp, Math.max(-clamp, grad[j]));
      const m = (s0[i] = b1 * s0[i] + (1 - b1) * gc);
      const v = (s1[i] = b2 * s1[i] + (1 - b2) * gc * gc);
      w[i] = w[i] * decay - (stepSize * m) / (Math.sqrt(v) + epsHat);
    }
}
