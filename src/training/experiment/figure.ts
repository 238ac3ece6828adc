import sharp from 'sharp';
import { esc, panelRow, reconstructionGrid, type GridRow } from '../report/figures.js';

/** One swept value in one panel: every seed's score, their mean and standard deviation. */
export interface SweepPoint {
  x: number;
  values: number[];
  mean: number;
  sd: number;
}

export interface SweepPanel {
  label: string;
  points: SweepPoint[];
}

const BLUE = '#3b6ea8';

/**
 * The report's figure layout (Figures 1, 3, 4): a metric against the swept value, one panel per
 * metric, each panel on its own y range; the line joins the means over seeds, bars are +-1 s.d., grey
 * dots the single seeds. `ticks` place and name the swept values on the x axis.
 */
export function sweepFigureSvg(title: string, axis: string, ticks: { x: number; label: string }[], panels: SweepPanel[]): string {
  const { pw, ph, pad, parts } = panelRow(title, panels.length, 260, 170, 48);
  const xs = ticks.map((t) => t.x);
  let xlo = Math.min(...xs);
  let xhi = Math.max(...xs);
  // A margin of half a step either side, so the end points and their bars stay inside the frame.
  const margin = xhi > xlo ? (xhi - xlo) / Math.max(2, 2 * (ticks.length - 1)) : 0.5;
  xlo -= margin;
  xhi += margin;
  panels.forEach((p, k) => {
    const x0 = pad + k * (pw + pad);
    const y0 = pad;
    parts.push(`<text x="${x0}" y="${y0 - 6}">${esc(p.label)}</text>`);
    parts.push(`<rect x="${x0}" y="${y0}" width="${pw}" height="${ph}" fill="none" stroke="#999"/>`);
    const sx = (v: number): number => x0 + ((v - xlo) / (xhi - xlo)) * pw;
    // Labels that would overlap the one before (8000 beside 8600 on a log axis) keep their tick only.
    let labelledTo = -Infinity;
    for (const t of ticks) {
      const x = sx(t.x);
      parts.push(`<line x1="${x.toFixed(1)}" y1="${y0 + ph}" x2="${x.toFixed(1)}" y2="${y0 + ph + 4}" stroke="#999"/>`);
      const half = t.label.length * 2.8;
      if (x - half < labelledTo + 4) continue;
      parts.push(`<text x="${x.toFixed(1)}" y="${y0 + ph + 15}" text-anchor="middle" font-size="9">${esc(t.label)}</text>`);
      labelledTo = x + half;
    }
    // A long axis name ('readin (C: neuron coordinates, T: ...)') would run into the next panel: shrink it to the panel's width.
    const axisSize = Math.min(12, pw / (0.58 * Math.max(1, axis.length)));
    parts.push(`<text x="${x0 + pw / 2}" y="${y0 + ph + 30}" text-anchor="middle" font-size="${axisSize.toFixed(1)}">${esc(axis)}</text>`);
    const pts = p.points.filter((q) => Number.isFinite(q.mean));
    if (!pts.length) return;
    const all = pts.flatMap((q) => [q.mean - q.sd, q.mean + q.sd, ...q.values]).filter(Number.isFinite);
    let lo = Math.min(...all);
    let hi = Math.max(...all);
    const span = hi - lo || Math.abs(hi) * 0.1 || 1;
    lo -= span * 0.08;
    hi += span * 0.08;
    const sy = (v: number): number => y0 + ph - ((v - lo) / (hi - lo)) * ph;
    for (const q of pts) for (const v of q.values) if (Number.isFinite(v)) parts.push(`<circle cx="${sx(q.x).toFixed(1)}" cy="${sy(v).toFixed(1)}" r="1.6" fill="#aaa"/>`);
    parts.push(`<polyline fill="none" stroke="${BLUE}" stroke-width="1.5" points="${pts.map((q) => `${sx(q.x).toFixed(1)},${sy(q.mean).toFixed(1)}`).join(' ')}"/>`);
    for (const q of pts) {
      const cx = sx(q.x).toFixed(1);
      if (q.sd > 0) {
        const [a, b] = [sy(q.mean - q.sd).toFixed(1), sy(q.mean + q.sd).toFixed(1)];
        parts.push(`<line x1="${cx}" y1="${a}" x2="${cx}" y2="${b}" stroke="${BLUE}"/>`);
        for (const y of [a, b]) parts.push(`<line x1="${(sx(q.x) - 3).toFixed(1)}" y1="${y}" x2="${(sx(q.x) + 3).toFixed(1)}" y2="${y}" stroke="${BLUE}"/>`);
      }
      parts.push(`<circle cx="${cx}" cy="${sy(q.mean).toFixed(1)}" r="2.5" fill="${BLUE}"/>`);
    }
    parts.push(`<text x="${x0 - 4}" y="${y0 + 8}" text-anchor="end" font-size="9">${hi.toPrecision(3)}</text>`);
    parts.push(`<text x="${x0 - 4}" y="${y0 + ph}" text-anchor="end" font-size="9">${lo.toPrecision(3)}</text>`);
  });
  parts.push('</svg>');
  return parts.join('\n');
}

/** An SVG drawn into a PNG at twice its size (sharp's librsvg; text needs a system font). */
export async function svgToPng(svg: string): Promise<Buffer> {
  return sharp(Buffer.from(svg), { density: 144 }).png().toBuffer();
}

const LABEL_WIDTH = 130;

/**
 * reconstructionGrid with its row labels drawn at the left (the report's Figure 2: stimuli on top,
 * then one row per swept value).
 */
export async function labelledGrid(rows: GridRow[], count: number, h: number, w: number): Promise<Buffer> {
  const scale = 3;
  const grid = reconstructionGrid(rows, count, h, w, { scale, columns: count, labels: false });
  const meta = await sharp(grid).metadata();
  const gap = 4;
  const labels = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${LABEL_WIDTH}" height="${meta.height}" font-family="sans-serif" font-size="12">`,
    ...rows.map((r, i) => `<text x="${LABEL_WIDTH - 6}" y="${gap + i * (h * scale + gap) + (h * scale) / 2 + 4}" text-anchor="end">${esc(r.label)}</text>`),
    '</svg>',
  ].join('');
  return sharp(grid)
    .extend({ left: LABEL_WIDTH, background: { r: 255, g: 255, b: 255, alpha: 1 } })
    .composite([{ input: Buffer.from(labels), left: 0, top: 0 }])
    .png()
    .toBuffer();
}
