/**
 * Response scaling, the one piece of arithmetic that datasets (preprocessing), training, bundles and
 * the server must share exactly: std scaling per neuron, then the optional response transform.
 */
export type ResponseScaling = 'brainreader' | 'sensorium';
export type ResponseTransform = 'none' | 'log10clamp';

/** Per-neuron std-scaling multiplier from train-tier stds, in the report's two variants. */
export function responseScaleVector(std: Float32Array, kind: ResponseScaling): Float32Array {
  const out = new Float32Array(std.length);
  if (kind === 'brainreader') {
    for (let i = 0; i < std.length; i++) out[i] = 1 / (std[i] + 1e-8);
    return out;
  }
  let mean = 0;
  for (const s of std) mean += s / std.length;
  const floor = 0.01 * mean;
  for (let i = 0; i < std.length; i++) out[i] = std[i] > floor ? 1 / std[i] : 1 / floor;
  return out;
}

/**
 * Raw responses -> decoder input: std scaling then the bundle's transform. Training, offline
 * evaluation and the server all call this one function, so their inputs agree bit for bit.
 */
export function applyResponseTransform(raw: ArrayLike<number>, stdScale: Float32Array, transform: ResponseTransform, out: Float32Array = new Float32Array(raw.length)): Float32Array {
  const n = stdScale.length;
  for (let i = 0; i < raw.length; i++) out[i] = raw[i] * stdScale[i % n];
  if (transform === 'log10clamp') for (let i = 0; i < out.length; i++) out[i] = Math.log10(Math.max(out[i], 1e-3));
  return out;
}
