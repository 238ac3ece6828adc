/**
 * Area resampling of grey images (row-major float arrays). Each output pixel is the exact area-weighted
 * mean of the input pixels it covers, so 144x256 -> 36x64 is the 4x4 block mean the report uses.
 */
export function resizeArea(src: ArrayLike<number>, h: number, w: number, oh: number, ow: number, out = new Float32Array(oh * ow)): Float32Array {
  const sy = h / oh;
  const sx = w / ow;
  // Precompute per-axis overlaps: output index -> list of (input index, weight).
  const axis = (n: number, on: number, s: number): { idx: number[]; wt: number[] }[] =>
    Array.from({ length: on }, (_, o) => {
      const a = o * s;
      const b = a + s;
      const idx: number[] = [];
      const wt: number[] = [];
      for (let i = Math.floor(a); i < Math.min(n, Math.ceil(b)); i++) {
        const ov = Math.min(b, i + 1) - Math.max(a, i);
        if (ov > 1e-12) {
          idx.push(i);
          wt.push(ov / s);
        }
      }
      return { idx, wt };
    });
  const ys = axis(h, oh, sy);
  const xs = axis(w, ow, sx);
  for (let oy = 0; oy < oh; oy++) {
    const ry = ys[oy];
    for (let ox = 0; ox < ow; ox++) {
      const rx = xs[ox];
      let acc = 0;
      for (let a = 0; a < ry.idx.length; a++) {
        const row = ry.idx[a] * w;
        let racc = 0;
        for (let b = 0; b < rx.idx.length; b++) racc += src[row + rx.idx[b]] * rx.wt[b];
        acc += racc * ry.wt[a];
      }
      out[oy * ow + ox] = acc;
    }
  }
  return out;
}

/** Per-image min-max scaling to [0,1], as the report prescribes before MSE/SSIM (eps 1e-8). */
export function minMax(x: ArrayLike<number>, out = new Float64Array(x.length)): Float64Array {
  let lo = Infinity;
  let hi = -Infinity;
  for (let i = 0; i < x.length; i++) {
    if (x[i] < lo) lo = x[i];
    if (x[i] > hi) hi = x[i];
  }
  const d = hi - lo + 1e-8;
  for (let i = 0; i < x.length; i++) out[i] = (x[i] - lo) / d;
  return out;
}

/**
 * A [ch, cw] window of a grey image at (top, left), optionally mirrored left-right, resampled
 * bilinearly to [oh, ow] (upsampling: the window is at most the image). Window coordinates may be
 * fractional.
 */
export function cropResize(src: ArrayLike<number>, h: number, w: number, c: { top: number; left: number; height: number; width: number; flip: boolean }, oh: number, ow: number, out = new Float32Array(oh * ow)): Float32Array {
  const sy = c.height / oh;
  const sx = c.width / ow;
  for (let oy = 0; oy < oh; oy++) {
    const y = Math.min(h - 1, Math.max(0, c.top + (oy + 0.5) * sy - 0.5));
    const y0 = Math.floor(y);
    const y1 = Math.min(h - 1, y0 + 1);
    const fy = y - y0;
    for (let ox = 0; ox < ow; ox++) {
      const ix = c.flip ? ow - 1 - ox : ox;
      const x = Math.min(w - 1, Math.max(0, c.left + (ix + 0.5) * sx - 0.5));
      const x0 = Math.floor(x);
      const x1 = Math.min(w - 1, x0 + 1);
      const fx = x - x0;
      const top = src[y0 * w + x0] * (1 - fx) + src[y0 * w + x1] * fx;
      const bottom = src[y1 * w + x0] * (1 - fx) + src[y1 * w + x1] * fx;
      out[oy * ow + ox] = top * (1 - fy) + bottom * fy;
    }
  }
  return out;
}
