/** Nearest-rank percentile (p in 0..100) of the finite values; NaN when there are none. */
export function percentile(values: readonly number[], p: number): number {
  const s = values.filter(Number.isFinite).sort((a, b) => a - b);
  return s.length ? s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] : NaN;
}

/** Per-column mean and population std of a row-major [rows, cols] matrix (float64 accumulation). */
export function columnMeanStd(m: ArrayLike<number>, rows: number, cols: number): { mean: Float64Array; std: Float32Array } {
  const mean = new Float64Array(cols);
  const sq = new Float64Array(cols);
  for (let r = 0; r < rows; r++)
    for (let c = 0; c < cols; c++) {
      const v = m[r * cols + c];
      mean[c] += v;
      sq[c] += v * v;
    }
  const std = new Float32Array(cols);
  for (let c = 0; c < cols; c++) {
    mean[c] /= rows;
    std[c] = Math.sqrt(Math.max(0, sq[c] / rows - mean[c] * mean[c]));
  }
  return { mean, std };
}

/**
 * Pearson correlation of each column of two row-major [rows, cols] matrices (per-neuron correlation
 * of predicted and recorded responses). A constant column gives 0, not NaN.
 */
export function columnCorrelation(a: ArrayLike<number>, b: ArrayLike<number>, rows: number, cols: number): Float32Array {
  const ma = columnMeanStd(a, rows, cols).mean;
  const mb = columnMeanStd(b, rows, cols).mean;
  const sab = new Float64Array(cols);
  const saa = new Float64Array(cols);
  const sbb = new Float64Array(cols);
  for (let r = 0; r < rows; r++)
    for (let c = 0; c < cols; c++) {
      const x = a[r * cols + c] - ma[c];
      const y = b[r * cols + c] - mb[c];
      sab[c] += x * y;
      saa[c] += x * x;
      sbb[c] += y * y;
    }
  const out = new Float32Array(cols);
  for (let c = 0; c < cols; c++) out[c] = saa[c] > 0 && sbb[c] > 0 ? sab[c] / Math.sqrt(saa[c] * sbb[c]) : 0;
  return out;
}

export const mean = (v: ArrayLike<number>): number => {
  let s = 0;
  for (let i = 0; i < v.length; i++) s += v[i];
  return v.length ? s / v.length : NaN;
};
