import { describe, expect, it } from 'vitest';
import { localContrast } from '../../src/training/ridge/contrast.js';

describe('local contrast energy (the contrast read-out target)', () => {
  const H = 12;
  const W = 20;

  it('is zero on a flat image, whatever its level', () => {
    const flat = new Float32Array(2 * H * W).fill(0.7);
    flat.fill(-3, H * W);
    expect(Math.max(...localContrast(flat, 2, H, W))).toBeLessThan(1e-6);
  });

  it('peaks on an edge and falls to zero away from it, the same for either polarity', () => {
    const edge = new Float32Array(H * W);
    for (let y = 0; y < H; y++) for (let x = 10; x < W; x++) edge[y * W + x] = 1;
    const flipped = edge.map((v) => 1 - v);
    const c = localContrast(edge, 1, H, W);
    const row = Array.from(c.subarray(6 * W, 7 * W));
    const peak = row.indexOf(Math.max(...row));
    expect([9, 10]).toContain(peak);
    expect(row[0]).toBeLessThan(0.01 * row[peak]);
    expect(row[W - 1]).toBeLessThan(0.01 * row[peak]);
    const cf = localContrast(flipped, 1, H, W);
    for (let i = 0; i < c.length; i++) expect(cf[i]).toBeCloseTo(c[i], 5);
  });

  it('scales with the contrast and names a size mismatch', () => {
    const img = Float32Array.from({ length: H * W }, (_, i) => Math.sin(i * 0.7));
    const c1 = localContrast(img, 1, H, W);
    const c2 = localContrast(img.map((v) => 3 * v), 1, H, W);
    for (let i = 0; i < c1.length; i++) expect(c2[i]).toBeCloseTo(3 * c1[i], 4);
    expect(() => localContrast(img, 2, H, W)).toThrow(/2 images of 12x20/);
  });
});
