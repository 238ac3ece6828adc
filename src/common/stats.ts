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
