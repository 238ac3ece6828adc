import { describe, expect, it } from 'vitest';
import { cholesky, choleskySolve, Gemm } from '../../src/training/engine/linalg.js';
import { randn, matmul } from '../helpers/reference.js';

describe('blocked Cholesky on ONNX Runtime GEMMs', () => {
  it.each([5, 200, 421])('solves an SPD system of size %i (several blocks, ragged last block)', async (n) => {
    const gemm = await Gemm.create();
    const p = 3;
    const a = randn(n * n, 5);
    // A = M M^T / n + I is SPD and well conditioned.
    const at = new Float64Array(n * n);
    for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) at[j * n + i] = a[i * n + j];
    const A = matmul(a, at, n, n, n).map((v, k) => v / n + (k % (n + 1) === 0 ? 1 : 0));
    const xTrue = Float64Array.from(randn(n * p, 6));
    const b = matmul(A, xTrue, n, n, p);
    const chol = await cholesky(gemm, A, n);
    // L L^T reproduces A.
    const lt = new Float64Array(n * n);
    for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) lt[j * n + i] = chol.l[i * n + j];
    const llt = matmul(chol.l, lt, n, n, n);
    let err = 0;
    for (let k = 0; k < n * n; k++) err = Math.max(err, Math.abs(llt[k] - A[k]));
    expect(err).toBeLessThan(1e-4);
    const x = await choleskySolve(gemm, chol, b, n, p);
    let xerr = 0;
    for (let k = 0; k < n * p; k++) xerr = Math.max(xerr, Math.abs(x[k] - xTrue[k]));
    expect(xerr).toBeLessThan(1e-3);
  });

  it('reports a matrix that is not positive definite', async () => {
    const gemm = await Gemm.create();
    await expect(cholesky(gemm, Float64Array.from([1, 2, 2, 1]), 2)).rejects.toThrow(/not positive definite/);
  });
});
