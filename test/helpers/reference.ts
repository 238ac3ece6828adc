/**
 * Plain-TypeScript reference computations (float64, naive loops) that the ONNX graphs are checked
 * against. Written for clarity, not speed.
 */
export function matmul(a: ArrayLike<number>, b: ArrayLike<number>, m: number, k: number, n: number): Float64Array {
  const out = new Float64Array(m * n);
  for (let i = 0; i < m; i++)
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let p = 0; p < k; p++) s += a[i * k + p] * b[p * n + j];
      out[i * n + j] = s;
    }
  return out;
}

export interface ConvSpec {
  n: number;
  cin: number;
  h: number;
  w: number;
  cout: number;
  k: number;
  stride: number;
  pad: number;
  dilation: number;
  groups: number;
}

export function conv2d(x: ArrayLike<number>, wt: ArrayLike<number>, bias: ArrayLike<number> | undefined, s: ConvSpec): { out: Float64Array; oh: number; ow: number } {
  const oh = Math.floor((s.h + 2 * s.pad - s.dilation * (s.k - 1) - 1) / s.stride) + 1;
  const ow = Math.floor((s.w + 2 * s.pad - s.dilation * (s.k - 1) - 1) / s.stride) + 1;
  const cinG = s.cin / s.groups;
  const coutG = s.cout / s.groups;
  const out = new Float64Array(s.n * s.cout * oh * ow);
  for (let b = 0; b < s.n; b++)
    for (let co = 0; co < s.cout; co++) {
      const gi = Math.floor(co / coutG);
      for (let y = 0; y < oh; y++)
        for (let x = 0; x < ow; x++) {
          let acc = bias ? bias[co] : 0;
          for (let ci = 0; ci < cinG; ci++)
            for (let ky = 0; ky < s.k; ky++)
              for (let kx = 0; kx < s.k; kx++) {
                const iy = y * s.stride - s.pad + ky * s.dilation;
                const ix = x * s.stride - s.pad + kx * s.dilation;
                if (iy < 0 || ix < 0 || iy >= s.h || ix >= s.w) continue;
                const c = gi * cinG + ci;
                acc += x_(x, b, c, iy, ix) * wt[((co * cinG + ci) * s.k + ky) * s.k + kx];
              }
          out[((b * s.cout + co) * oh + y) * ow + x] = acc;
        }
    }
  return { out, oh, ow };
  function x_(_x: number, b: number, c: number, iy: number, ix: number): number {
    return (x as ArrayLike<number>)[((b * s.cin + c) * s.h + iy) * s.w + ix];
  }
}

/** Transposed convolution as the scatter of each input pixel through the kernel. Weight [cin, cout/g, k, k]. */
export function convTranspose2d(
  x: ArrayLike<number>,
  wt: ArrayLike<number>,
  bias: ArrayLike<number> | undefined,
  s: ConvSpec & { outputPadding: number },
): { out: Float64Array; oh: number; ow: number } {
  const oh = (s.h - 1) * s.stride - 2 * s.pad + s.dilation * (s.k - 1) + s.outputPadding + 1;
  const ow = (s.w - 1) * s.stride - 2 * s.pad + s.dilation * (s.k - 1) + s.outputPadding + 1;
  const cinG = s.cin / s.groups;
  const coutG = s.cout / s.groups;
  const out = new Float64Array(s.n * s.cout * oh * ow);
  for (let b = 0; b < s.n; b++)
    for (let co = 0; co < s.cout; co++) for (let i = 0; i < oh * ow; i++) out[(b * s.cout + co) * oh * ow + i] = bias ? bias[co] : 0;
  for (let b = 0; b < s.n; b++)
    for (let ci = 0; ci < s.cin; ci++) {
      const gi = Math.floor(ci / cinG);
      for (let iy = 0; iy < s.h; iy++)
        for (let ix = 0; ix < s.w; ix++) {
          const v = x[((b * s.cin + ci) * s.h + iy) * s.w + ix];
          for (let cg = 0; cg < coutG; cg++) {
            const co = gi * coutG + cg;
            for (let ky = 0; ky < s.k; ky++)
              for (let kx = 0; kx < s.k; kx++) {
                const oy = iy * s.stride - s.pad + ky * s.dilation;
                const ox = ix * s.stride - s.pad + kx * s.dilation;
                if (oy < 0 || ox < 0 || oy >= oh || ox >= ow) continue;
                out[((b * s.cout + co) * oh + oy) * ow + ox] += v * wt[((ci * coutG + cg) * s.k + ky) * s.k + kx];
              }
          }
        }
    }
  return { out, oh, ow };
}

export function randn(n: number, seed: number, scale = 1): Float32Array {
  let s = seed >>> 0 || 1;
  const next = (): number => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return (s + 0.5) / 4294967296;
  };
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = scale * Math.sqrt(-2 * Math.log(next())) * Math.cos(2 * Math.PI * next());
  return out;
}

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} vs ${b.length}`);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}
