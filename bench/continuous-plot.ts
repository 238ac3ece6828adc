/**
 * The window sweep of bench/continuous.ts as an SVG: one column per swept quantity (window length,
 * lag), one row per metric, x in frames with milliseconds under each tick, the training window marked.
 */
export interface SweepPoint {
  lengthFrames: number;
  lagFrames: number;
  ssiml: number;
  pixcorr: number;
}

interface Panel {
  x: number[];
  y: number[];
  mark: number;
  xLabel: string;
  yLabel: string;
}

const W = 360;
const H = 240;
const M = { left: 62, right: 16, top: 34, bottom: 58 };

const esc = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
const fmt = (v: number): string => (Math.abs(v) >= 100 ? v.toFixed(0) : Math.abs(v) >= 1 ? v.toFixed(2) : v.toFixed(3));

function panel(p: Panel, ox: number, oy: number, rateHz: number, title: string): string {
  const xs = p.x;
  const [x0, x1] = [Math.min(...xs), Math.max(...xs)];
  let [y0, y1] = [Math.min(...p.y), Math.max(...p.y)];
  const pad = (y1 - y0) * 0.1 || Math.abs(y0) * 0.05 || 0.01;
  y0 -= pad;
  y1 += pad;
  const pw = W - M.left - M.right;
  const ph = H - M.top - M.bottom;
  const sx = (v: number): number => ox + M.left + (x1 === x0 ? pw / 2 : ((v - x0) / (x1 - x0)) * pw);
  const sy = (v: number): number => oy + M.top + ph - ((v - y0) / (y1 - y0)) * ph;
  const out: string[] = [];
  out.push(`<text x="${ox + M.left + pw / 2}" y="${oy + 20}" text-anchor="middle" font-size="13" font-weight="bold">${esc(title)}</text>`);
  out.push(`<rect x="${ox + M.left}" y="${oy + M.top}" width="${pw}" height="${ph}" fill="none" stroke="#888"/>`);
  // The training window's tick is always labelled; a label that would overlap one already placed is
  // left out (its tick stays).
  const placed: number[] = [];
  for (const v of [p.mark, ...xs.filter((x) => x !== p.mark)]) {
    out.push(`<line x1="${sx(v)}" y1="${oy + M.top + ph}" x2="${sx(v)}" y2="${oy + M.top + ph + 4}" stroke="#444"/>`);
    if (placed.some((x) => Math.abs(sx(v) - x) < 34)) continue;
    placed.push(sx(v));
    out.push(`<text x="${sx(v)}" y="${oy + M.top + ph + 16}" text-anchor="middle" font-size="10">${v}</text>`);
    out.push(`<text x="${sx(v)}" y="${oy + M.top + ph + 28}" text-anchor="middle" font-size="9" fill="#666">${Math.round((1000 * v) / rateHz)} ms</text>`);
  }
  for (let i = 0; i <= 4; i++) {
    const v = y0 + ((y1 - y0) * i) / 4;
    out.push(`<line x1="${ox + M.left - 4}" y1="${sy(v)}" x2="${ox + M.left}" y2="${sy(v)}" stroke="#444"/>`);
    out.push(`<text x="${ox + M.left - 6}" y="${sy(v) + 3}" text-anchor="end" font-size="10">${fmt(v)}</text>`);
  }
  out.push(`<line x1="${sx(p.mark)}" y1="${oy + M.top}" x2="${sx(p.mark)}" y2="${oy + M.top + ph}" stroke="#c33" stroke-dasharray="4 3"/>`);
  out.push(`<text x="${sx(p.mark) + 3}" y="${oy + M.top + 11}" font-size="9" fill="#c33">training window</text>`);
  const pts = xs.map((v, i) => `${sx(v).toFixed(1)},${sy(p.y[i]).toFixed(1)}`).join(' ');
  out.push(`<polyline points="${pts}" fill="none" stroke="#2a6fb0" stroke-width="2"/>`);
  for (let i = 0; i < xs.length; i++) out.push(`<circle cx="${sx(xs[i])}" cy="${sy(p.y[i])}" r="3" fill="#2a6fb0"/>`);
  out.push(`<text x="${ox + M.left + pw / 2}" y="${oy + H - 10}" text-anchor="middle" font-size="11">${esc(p.xLabel)}</text>`);
  out.push(`<text transform="translate(${ox + 14},${oy + M.top + ph / 2}) rotate(-90)" text-anchor="middle" font-size="11">${esc(p.yLabel)}</text>`);
  return out.join('\n');
}

/** Two sweeps (length at the training lag, lag at the training length) x two metrics. */
export function sweepSvg(byLength: SweepPoint[], byLag: SweepPoint[], trained: { lengthFrames: number; lagFrames: number }, rateHz: number, caption: string[]): string {
  const rows: [keyof Pick<SweepPoint, 'ssiml' | 'pixcorr'>, string][] = [
    ['ssiml', 'SSIM loss (lower is better)'],
    ['pixcorr', 'PixCorr (higher is better)'],
  ];
  const parts: string[] = [];
  rows.forEach(([key, label], r) => {
    parts.push(
      panel(
        { x: byLength.map((p) => p.lengthFrames), y: byLength.map((p) => p[key]), mark: trained.lengthFrames, xLabel: `window length (frames; ms at ${rateHz.toFixed(1)} Hz)`, yLabel: label },
        0,
        r * H,
        rateHz,
        `window length, lag ${trained.lagFrames} frames`,
      ),
    );
    parts.push(
      panel(
        { x: byLag.map((p) => p.lagFrames), y: byLag.map((p) => p[key]), mark: trained.lagFrames, xLabel: `lag after onset frame (frames; ms at ${rateHz.toFixed(1)} Hz)`, yLabel: label },
        W,
        r * H,
        rateHz,
        `lag, window length ${trained.lengthFrames} frames`,
      ),
    );
  });
  const height = 2 * H + 10 + 16 * caption.length;
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${2 * W}" height="${height}" viewBox="0 0 ${2 * W} ${height}" font-family="sans-serif">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    ...parts,
    ...caption.map((c, i) => `<text x="${W}" y="${2 * H + 20 + 16 * i}" text-anchor="middle" font-size="11" fill="#333">${esc(c)}</text>`),
    `</svg>`,
    '',
  ].join('\n');
}
