import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { PNG } from 'pngjs';
import { minMax } from '../../datasets/image-ops.js';
import { GLYPH_HEIGHT, GLYPH_WIDTH, GLYPHS } from './glyphs.js';

export interface GridRow {
  label: string;
  /** [count, h*w] images, any range (each is min-max scaled for display). */
  images: Float32Array;
}

/** Longest row label drawn, in characters; longer ones are cut with '..'. */
const MAX_LABEL = 28;

/**
 * A figure like the report's Figure 5: one column per image, one row per source (ground truth first,
 * then each decoder), images min-max scaled and enlarged, a thin gap between tiles, each row's label
 * at its left (`labels: false` leaves the margin out, for callers that draw their own).
 */
export function reconstructionGrid(rows: GridRow[], count: number, h: number, w: number, opts: { scale?: number; columns?: number; labels?: boolean } = {}): Buffer {
  const scale = opts.scale ?? 3;
  const cols = Math.min(count, opts.columns ?? 10);
  const blocks = Math.ceil(count / cols);
  const gap = 4;
  const tileW = w * scale;
  const tileH = h * scale;
  const labels = opts.labels === false ? [] : rows.map((r) => (r.label.length > MAX_LABEL ? `${r.label.slice(0, MAX_LABEL - 2)}..` : r.label));
  const margin = labels.length ? Math.max(...labels.map((l) => l.length)) * GLYPH_WIDTH + 2 * gap : 0;
  const width = margin + cols * (tileW + gap) + gap;
  const blockH = rows.length * (tileH + gap) + gap * 3;
  const png = new PNG({ width, height: blocks * blockH });
  png.data.fill(255);
  for (let by = 0; by < blocks; by++)
    labels.forEach((l, r) => {
      const y0 = by * blockH + gap + r * (tileH + gap) + Math.floor((tileH - GLYPH_HEIGHT) / 2);
      drawText(png, l, margin - gap - l.length * GLYPH_WIDTH, y0);
    });
  for (let i = 0; i < count; i++) {
    const bx = i % cols;
    const by = Math.floor(i / cols);
    rows.forEach((row, r) => {
      const img = minMax(row.images.subarray(i * h * w, (i + 1) * h * w));
      const x0 = margin + gap + bx * (tileW + gap);
      const y0 = by * blockH + gap + r * (tileH + gap);
      for (let y = 0; y < tileH; y++)
        for (let x = 0; x < tileW; x++) {
          const v = Math.round(255 * img[Math.floor(y / scale) * w + Math.floor(x / scale)]);
          const o = ((y0 + y) * width + x0 + x) * 4;
          png.data[o] = png.data[o + 1] = png.data[o + 2] = v;
          png.data[o + 3] = 255;
        }
    });
  }
  return PNG.sync.write(png);
}

/** Dark text on the image from (x, y), its top left; characters outside printable ASCII show as '?'. */
export function drawText(png: PNG, text: string, x: number, y: number): void {
  for (let k = 0; k < text.length; k++) {
    const code = text.charCodeAt(k);
    const glyph = GLYPHS[code >= 32 && code < 127 ? code - 32 : '?'.charCodeAt(0) - 32];
    for (let gy = 0; gy < GLYPH_HEIGHT; gy++)
      for (let gx = 0; gx < GLYPH_WIDTH; gx++) {
        const px = x + k * GLYPH_WIDTH + gx;
        const py = y + gy;
        const ink = parseInt(glyph[gy * GLYPH_WIDTH + gx], 16) / 15;
        if (!ink || px < 0 || py < 0 || px >= png.width || py >= png.height) continue;
        const o = (py * png.width + px) * 4;
        for (let c = 0; c < 3; c++) png.data[o + c] = Math.round(png.data[o + c] * (1 - ink));
      }
  }
}

export function writeFile(file: string, data: Buffer | string): void {
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, data);
}

export interface Series {
  label: string;
  values: number[];
}

/** Text for SVG: the two characters that would break it escaped. */
export const esc = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;');

/** The opening of an SVG with a title and `count` panels of pw x ph side by side. */
export function panelRow(title: string, count: number, pw: number, ph: number, pad: number): { pw: number; ph: number; pad: number; parts: string[] } {
  const W = count * (pw + pad) + pad;
  const H = ph + 2 * pad + 24;
  const parts = [`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="11">`, `<rect width="100%" height="100%" fill="white"/>`, `<text x="${pad}" y="18" font-size="14">${esc(title)}</text>`];
  return { pw, ph, pad, parts };
}

/** A small SVG histogram panel set: one panel per series, for people who would rather look than read. */
export function histogramsSvg(title: string, series: { label: string; values: ArrayLike<number>; bins?: number; log?: boolean }[]): string {
  const { pw, ph, pad, parts } = panelRow(title, series.length, 320, 200, 40);
  series.forEach((s, k) => {
    const vals = Array.from(s.values).filter(Number.isFinite);
    const bins = s.bins ?? 40;
    // A loop, not Math.min(...vals): a histogram of millions of values overflows the call stack as arguments.
    let lo = Infinity;
    let hi = -Infinity;
    for (const v of vals) {
      if (v < lo) lo = v;
      if (v > hi) hi = v;
    }
    if (hi === lo) hi = lo + 1;
    const counts = new Array(bins).fill(0);
    for (const v of vals) counts[Math.min(bins - 1, Math.floor(((v - lo) / (hi - lo)) * bins))]++;
    const shown = counts.map((c) => (s.log ? Math.log10(1 + c) : c));
    const top = Math.max(...shown, 1);
    const x0 = pad + k * (pw + pad);
    const y0 = pad;
    parts.push(`<text x="${x0}" y="${y0 - 6}">${esc(s.label)}${s.log ? ' (log count)' : ''}</text>`);
    parts.push(`<text transform="translate(${x0 - 6},${y0 + ph / 2}) rotate(-90)" text-anchor="middle">${s.log ? 'log10(1 + count)' : 'count'}</text>`);
    parts.push(`<rect x="${x0}" y="${y0}" width="${pw}" height="${ph}" fill="none" stroke="#999"/>`);
    shown.forEach((c, i) => {
      const bh = (c / top) * ph;
      parts.push(`<rect x="${(x0 + (i * pw) / bins).toFixed(1)}" y="${(y0 + ph - bh).toFixed(1)}" width="${(pw / bins - 1).toFixed(1)}" height="${bh.toFixed(1)}" fill="#3b6ea8"/>`);
    });
    parts.push(`<text x="${x0}" y="${y0 + ph + 14}">${lo.toPrecision(3)}</text>`);
    parts.push(`<text x="${x0 + pw}" y="${y0 + ph + 14}" text-anchor="end">${hi.toPrecision(3)}</text>`);
    const mean = vals.reduce((a, b) => a + b, 0) / vals.length;
    parts.push(`<text x="${x0 + pw / 2}" y="${y0 + ph + 28}" text-anchor="middle">n=${vals.length} mean=${mean.toPrecision(3)}</text>`);
  });
  parts.push('</svg>');
  return parts.join('\n');
}

/** Training curves: one panel per metric, each on its own y range; `xAxis` names what x counts. */
export function curvesSvg(title: string, x: number[], panels: { label: string; values: number[] }[], xAxis = 'optimisation step'): string {
  const { pw, ph, pad, parts } = panelRow(title, panels.length, 280, 160, 44);
  const xlo = Math.min(...x);
  const xhi = Math.max(...x, xlo + 1);
  panels.forEach((p, k) => {
    const pts = p.values.map((v, i) => [x[i], v] as const).filter(([, v]) => Number.isFinite(v));
    const x0 = pad + k * (pw + pad);
    const y0 = pad;
    parts.push(`<text x="${x0}" y="${y0 - 6}">${esc(p.label)}</text>`);
    parts.push(`<rect x="${x0}" y="${y0}" width="${pw}" height="${ph}" fill="none" stroke="#999"/>`);
    parts.push(`<text x="${x0 + pw / 2}" y="${y0 + ph + 28}" text-anchor="middle">${esc(xAxis)}</text>`);
    if (!pts.length) return;
    let lo = Math.min(...pts.map(([, v]) => v));
    let hi = Math.max(...pts.map(([, v]) => v));
    if (hi === lo) [lo, hi] = [lo - 0.5, hi + 0.5];
    const sx = (v: number): number => x0 + ((v - xlo) / (xhi - xlo)) * pw;
    const sy = (v: number): number => y0 + ph - ((v - lo) / (hi - lo)) * ph;
    parts.push(`<polyline fill="none" stroke="#3b6ea8" stroke-width="1.5" points="${pts.map(([a, b]) => `${sx(a).toFixed(1)},${sy(b).toFixed(1)}`).join(' ')}"/>`);
    for (const [a, b] of pts) parts.push(`<circle cx="${sx(a).toFixed(1)}" cy="${sy(b).toFixed(1)}" r="2" fill="#3b6ea8"/>`);
    parts.push(`<text x="${x0 - 4}" y="${y0 + 8}" text-anchor="end">${hi.toPrecision(3)}</text>`);
    parts.push(`<text x="${x0 - 4}" y="${y0 + ph}" text-anchor="end">${lo.toPrecision(3)}</text>`);
    parts.push(`<text x="${x0}" y="${y0 + ph + 14}">${xlo}</text>`);
    parts.push(`<text x="${x0 + pw}" y="${y0 + ph + 14}" text-anchor="end">${xhi}</text>`);
  });
  parts.push('</svg>');
  return parts.join('\n');
}
