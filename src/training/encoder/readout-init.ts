import { Gemm } from '../engine/linalg.js';
import { blurImage as blur } from '../ridge/contrast.js';

/**
 * Starting positions for Gaussian readouts, from the data: each neuron's response-weighted average of
 * local contrast energy (an energy spike-triggered average, which finds simple and complex cells
 * alike) peaks over its receptive field. Positions are returned in the readout's [-1, 1] coordinates
 * of the core's output, which is the image cropped by `border` pixels on each side (valid convolution).
 * Starting there instead of near the centre (the report's U(+-0.3)) saves the many epochs the
 * readout otherwise spends walking to its neurons' receptive fields.
 */
export async function energyStaPositions(images: Float32Array, responses: Float32Array, rows: number, neurons: number, h: number, w: number, border: number): Promise<Float32Array> {
  const P = h * w;
  const energy = new Float32Array(rows * P);
  for (let t = 0; t < rows; t++) {
    const x = images.subarray(t * P, (t + 1) * P);
    const low = blur(x, h, w, 3);
    const c2 = x.map((v, i) => (v - low[i]) ** 2);
    energy.set(blur(c2, h, w, 1.5), t * P);
  }
  // Centre both sides so the average is a covariance (luminance and mean rate drop out).
  const centre = (m: Float32Array, cols: number): void => {
    const mu = new Float64Array(cols);
    for (let t = 0; t < rows; t++) for (let c = 0; c < cols; c++) mu[c] += m[t * cols + c] / rows;
    for (let t = 0; t < rows; t++) for (let c = 0; c < cols; c++) m[t * cols + c] -= mu[c];
  };
  const r = Float32Array.from(responses.subarray(0, rows * neurons));
  centre(r, neurons);
  centre(energy, P);
  const gemm = await Gemm.create();
  const sta = await gemm.mul(r, energy, neurons, rows, P, true, false);
  const hf = h - 2 * border;
  const wf = w - 2 * border;
  const out = new Float32Array(neurons * 2);
  for (let n = 0; n < neurons; n++) {
    let best = -Infinity;
    let by = 0;
    let bx = 0;
    for (let y = border; y < h - border; y++)
      for (let x = border; x < w - border; x++) {
        const v = sta[n * P + y * w + x];
        if (v > best) {
          best = v;
          by = y;
          bx = x;
        }
      }
    out[n * 2] = ((bx - border) / (wf - 1)) * 2 - 1;
    out[n * 2 + 1] = ((by - border) / (hf - 1)) * 2 - 1;
  }
  return out;
}
