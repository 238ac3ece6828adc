import { PNG } from 'pngjs';
import { describe, expect, it } from 'vitest';
import { GLYPH_HEIGHT, GLYPH_WIDTH } from '../../src/training/report/glyphs.js';
import { curvesSvg, histogramsSvg, reconstructionGrid } from '../../src/training/report/figures.js';

const h = 6;
const w = 8;
const images = (n: number, k: number): Float32Array => Float32Array.from({ length: n * h * w }, (_, i) => Math.sin(i * (k + 1)));

/** Dark pixels (ink) in a rectangle of the image. */
function ink(png: PNG, x0: number, y0: number, x1: number, y1: number): number {
  let n = 0;
  for (let y = y0; y < y1; y++) for (let x = x0; x < x1; x++) if (png.data[(y * png.width + x) * 4] < 128) n++;
  return n;
}

describe('reconstruction grids', () => {
  const rows = [
    { label: 'stimulus', images: images(3, 0) },
    { label: 'ridge', images: images(3, 1) },
    { label: 'gan', images: images(3, 2) },
  ];

  it('name every row at its left, in a margin as wide as the longest label', () => {
    const png = PNG.sync.read(reconstructionGrid(rows, 3, h, w, { scale: 4 }));
    const gap = 4;
    const margin = 'stimulus'.length * GLYPH_WIDTH + 2 * gap;
    expect(png.width).toBe(margin + 3 * (w * 4 + gap) + gap);
    const tileH = h * 4;
    const band = (r: number): [number, number] => [gap + r * (tileH + gap), gap + r * (tileH + gap) + tileH];
    // Each label is right-aligned against the tiles: 'ridge' (5 characters) leaves the margin's left 3 cells blank.
    for (const [r, label] of ['stimulus', 'ridge', 'gan'].entries()) {
      const [y0, y1] = band(r);
      const start = margin - gap - label.length * GLYPH_WIDTH;
      expect(ink(png, start, y0, margin - gap, y1), label).toBeGreaterThan(label.length * 4);
      expect(ink(png, 0, y0, start, y1), label).toBe(0);
    }
  });

  it('leave the margin out for callers that draw their own labels', () => {
    const png = PNG.sync.read(reconstructionGrid(rows, 3, h, w, { scale: 4, labels: false }));
    expect(png.width).toBe(3 * (w * 4 + 4) + 4);
  });

  it('cut long labels so that a long bundle name does not push the images away', () => {
    const png = PNG.sync.read(reconstructionGrid([{ label: 'x'.repeat(100), images: images(1, 0) }], 1, h, w, { scale: 4 }));
    expect(png.width).toBe(28 * GLYPH_WIDTH + 8 + (w * 4 + 4) + 4);
    expect(GLYPH_HEIGHT).toBeLessThanOrEqual(16);
  });
});

describe('plots', () => {
  it('training curves name their x axis; histograms their y axis', () => {
    expect(curvesSvg('t', [0, 50, 100], [{ label: 'validation MSE', values: [1, 0.5, 0.4] }])).toContain('>optimisation step</text>');
    expect(curvesSvg('t', [1, 2], [{ label: 'loss', values: [1, 0.5] }], 'epoch')).toContain('>epoch</text>');
    expect(histogramsSvg('t', [{ label: 'r', values: [1, 2, 3] }, { label: 'l', values: [1, 2], log: true }])).toMatch(/rotate\(-90\)" text-anchor="middle">count<\/text>[\s\S]*>log10\(1 \+ count\)<\/text>/);
  });
});

describe('histograms of a whole recording', () => {
  it('bins millions of values (a recording of thousands of neurons) without overflowing the stack', () => {
    const values = Float32Array.from({ length: 3_000_000 }, (_, i) => (i % 1000) / 1000);
    const svg = histogramsSvg('responses', [{ label: 'all responses', values, bins: 10 }]);
    expect(svg).toContain('all responses');
  });
});
