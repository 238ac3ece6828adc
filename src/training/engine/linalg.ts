import type ort from 'onnxruntime-node';
import { newGraph, tensor } from '../../models/onnx/index.js';
import { createSession, runOnce } from '../../models/ort.js';

/**
 * Dense linear algebra for closed-form fits. The O(n^3) work (Gram matrices, Cholesky trailing
 * updates, triangular solves with many right-hand sides) runs as float32 GEMMs in ONNX Runtime
 * (MLAS, all cores); only small diagonal blocks are factorised in JavaScript, in float64.
 */
export class Gemm {
  private constructor(private readonly sessions: Map<string, ort.InferenceSession>) {}

  static async create(): Promise<Gemm> {
    const sessions = new Map<string, ort.InferenceSession>();
    for (const tA of [0, 1])
      for (const tB of [0, 1]) {
        const g = newGraph('gemm');
        const a = g.input('a', 'float32', tA ? ['k', 'm'] : ['m', 'k']);
        const b = g.input('b', 'float32', tB ? ['n', 'k'] : ['k', 'n']);
        g.output(g.op('Gemm', [a, b], { transA: tA, transB: tB }), 'c');
        sessions.set(`${tA}${tB}`, (await createSession(g)).session);
      }
    return new Gemm(sessions);
  }

  /** C = op(A) op(B); A is [m,k] (or [k,m] when transA), B is [k,n] (or [n,k] when transB). */
  async mul(a: ArrayLike<number>, b: ArrayLike<number>, m: number, k: number, n: number, transA = false, transB = false): Promise<Float32Array> {
    const s = this.sessions.get(`${+transA}${+transB}`)!;
    const fa = a instanceof Float32Array ? a : Float32Array.from(a);
    const fb = b instanceof Float32Array ? b : Float32Array.from(b);
    const out = await runOnce(s, { a: tensor('float32', transA ? [k, m] : [m, k], fa), b: tensor('float32', transB ? [n, k] : [k, n], fb) });
    return out.c.data as Float32Array;
  }
}

const BLOCK = 192;

/** In-place Cholesky of a small dense SPD block (float64), lower triangle. */
function cholSmall(a: Float64Array, n: number): void {
  for (let j = 0; j < n; j++) {
    let d = a[j * n + j];
    for (let k = 0; k < j; k++) d -= a[j * n + k] * a[j * n + k];
    if (!(d > 0)) throw new Error(`matrix is not positive definite (pivot ${j}: ${d}); increase the regularisation`);
    const ljj = Math.sqrt(d);
    a[j * n + j] = ljj;
    for (let i = j + 1; i < n; i++) {
      let s = a[i * n + j];
      for (let k = 0; k < j; k++) s -= a[i * n + k] * a[j * n + k];
      a[i * n + j] = s / ljj;
    }
    for (let k = j + 1; k < n; k++) a[j * n + k] = 0;
  }
}

/** Inverse of a lower-triangular block (float64). */
function invLower(l: Float64Array, n: number): Float64Array {
  const inv = new Float64Array(n * n);
  for (let j = 0; j < n; j++) {
    inv[j * n + j] = 1 / l[j * n + j];
    for (let i = j + 1; i < n; i++) {
      let s = 0;
      for (let k = j; k < i; k++) s += l[i * n + k] * inv[k * n + j];
      inv[i * n + j] = -s / l[i * n + i];
    }
  }
  return inv;
}

const block = (m: ArrayLike<number>, ld: number, r0: number, c0: number, rows: number, cols: number): Float64Array => {
  const out = new Float64Array(rows * cols);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[r * cols + c] = m[(r0 + r) * ld + c0 + c];
  return out;
};

/**
 * Blocked right-looking Cholesky of an n x n SPD matrix (row-major, float64 copy returned).
 * Keeps, per diagonal block, the inverse of L_kk for the solves.
 */
export async function cholesky(gemm: Gemm, a: Float64Array, n: number): Promise<{ l: Float64Array; invDiag: Float64Array[] }> {
  const l = Float64Array.from(a);
  const invDiag: Float64Array[] = [];
  for (let k = 0; k < n; k += BLOCK) {
    const b = Math.min(BLOCK, n - k);
    const akk = block(l, n, k, k, b, b);
    cholSmall(akk, b);
    const inv = invLower(akk, b);
    invDiag.push(inv);
    for (let r = 0; r < b; r++) for (let c = 0; c < b; c++) l[(k + r) * n + k + c] = akk[r * b + c];
    const m = n - k - b;
    if (m === 0) break;
    // Panel: L_ik = A_ik L_kk^-T.
    const panelA = block(l, n, k + b, k, m, b);
    const panel = await gemm.mul(panelA, inv, m, b, b, false, true);
    for (let r = 0; r < m; r++) for (let c = 0; c < b; c++) l[(k + b + r) * n + k + c] = panel[r * b + c];
    // Trailing update: A_22 -= L_ik L_ik^T (lower triangle is all later steps read).
    const upd = await gemm.mul(panel, panel, m, b, m, false, true);
    for (let r = 0; r < m; r++) {
      const row = (k + b + r) * n + k + b;
      for (let c = 0; c <= r; c++) l[row + c] -= upd[r * m + c];
    }
  }
  // Zero the upper triangle so l is exactly L.
  for (let r = 0; r < n; r++) for (let c = r + 1; c < n; c++) l[r * n + c] = 0;
  return { l, invDiag };
}

/** Solve (L L^T) X = B for X, B [n, p] row-major, by blocked forward then backward substitution. */
export async function choleskySolve(gemm: Gemm, chol: { l: Float64Array; invDiag: Float64Array[] }, b: Float64Array, n: number, p: number): Promise<Float64Array> {
  const { l, invDiag } = chol;
  const y = Float64Array.from(b);
  const nb = invDiag.length;
  const start = (i: number): number => i * BLOCK;
  const size = (i: number): number => Math.min(BLOCK, n - i * BLOCK);
  // Forward: L Y = B.
  for (let i = 0; i < nb; i++) {
    const r0 = start(i);
    const bs = size(i);
    let rhs = block(y, p, r0, 0, bs, p);
    if (r0 > 0) {
      const lrow = block(l, n, r0, 0, bs, r0);
      const prev = y.subarray(0, r0 * p);
      const sub = await gemm.mul(lrow, prev, bs, r0, p);
      rhs = rhs.map((v, k) => v - sub[k]);
    }
    const sol = await gemm.mul(invDiag[i], rhs, bs, bs, p);
    y.set(Float64Array.from(sol), r0 * p);
  }
  // Backward: L^T X = Y.
  const x = new Float64Array(n * p);
  for (let i = nb - 1; i >= 0; i--) {
    const r0 = start(i);
    const bs = size(i);
    let rhs = block(y, p, r0, 0, bs, p);
    const after = n - r0 - bs;
    if (after > 0) {
      // (L^T)_{i, >i} = (L_{>i, i})^T
      const lcol = block(l, n, r0 + bs, r0, after, bs);
      const sub = await gemm.mul(lcol, x.subarray((r0 + bs) * p), bs, after, p, true, false);
      rhs = rhs.map((v, k) => v - sub[k]);
    }
    const sol = await gemm.mul(invDiag[i], rhs, bs, bs, p, true, false);
    x.set(Float64Array.from(sol), r0 * p);
  }
  return x;
}
