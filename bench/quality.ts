/**
 * npm run bench:quality -- [--quick] [--population default|second|third] [--split regions|photos] [--ceiling] [--seeds N] [--budget 45m]
 *   [--encoder-budget 20m] [--recipe cortexcast|report] [--anchor ridge|none] [--anchor-folds 0|5]
 *   [--pairs 0|0.5] [--pairs-for cnn,gan] [--refiner-levels 0|2] [--cnn-loss mse|logssim|mae|mse+logssim] [--cnn-contrast on|off] [--cnn-contrast-downsample 1|2|4]
 *   [--data DIR] [--out DIR] [--decoders cnn,gan,latent-vae,latent-features] [--ae-budget 15m] [--gan-profile small|realtime]
 *   [--response-noise SD]
 *
 * Decoder quality against the linear readout measured in the same run: ridge (closed form), then the
 * small CNN and the small GAN (with its encoder and MEIs), each deep decoder under a wall-clock
 * budget, all evaluated on the test tier. The latent decoders (report IV-D) train their autoencoder
 * once on images alone (--ae-budget), then a readin per seed. Prints Table I plus SSIM and PixCorr per decoder and one
 * line of ratios against ridge per deep decoder (below 1.0 is better than ridge):
 *   vs ridge  SSIML 0.93  MSE 0.90  FID 0.70  (gan)
 * Every choice inside (ridge alpha, the exported checkpoint) is made on the validation tier. Each
 * stage writes its bundle under --out and is skipped when rerun (deep decoders resume from their
 * run folders), so an interrupted benchmark continues where it stopped.
 * --population second simulates the check population (3,000 neurons, 2,000 train trials, seed 11,
 * 30% complex cells, larger receptive fields); --population third another one (5,000 neurons, 3,000
 * train trials, seed 23, 85% complex cells, smaller receptive fields); --quick uses the small preset
 * with short budgets. --split regions (the default) takes validation and test images from every photo
 * (see SynthConfig.split); --split photos is the older split with one photo per held-out tier.
 * After the table: two-way identification per decoder and SSIML per source photo. --decoders none
 * measures ridge alone. --response-noise trains the deep decoders with noise augmentation of the
 * responses (train cnn --response-noise). --ceiling then measures the ceiling of what is decodable (see ceiling()).
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { parseDuration } from '../src/common/duration.js';
import { loadBundle } from '../src/models/bundle.js';
import { SYNTH_PRESETS, synthesize, type SynthConfig } from '../src/training/data/synth.js';
import { trainDecoder } from '../src/training/decoders/train-decoder.js';
import { encoderStage, meiStage } from '../src/training/encoder/gan-inputs.js';
import { selectNeurons } from '../src/training/encoder/meis.js';
import { evaluateBundle } from '../src/training/eval/evaluate.js';
import type { SourceScores } from '../src/training/eval/stimulus-sources.js';
import { trainAutoencoder } from '../src/training/latent/train-autoencoder.js';
import { trainFeatureDecoder } from '../src/training/latent/train-feature-decoder.js';
import { trainLatent } from '../src/training/latent/train-latent.js';
import { trainRidge } from '../src/training/ridge/train-ridge.js';

const { values: a } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    population: { type: 'string', default: 'default' },
    seeds: { type: 'string', default: '1' },
    budget: { type: 'string' },
    'encoder-budget': { type: 'string' },
    recipe: { type: 'string', default: 'cortexcast' },
    anchor: { type: 'string' },
    'anchor-folds': { type: 'string' },
    'refiner-levels': { type: 'string' },
    'cnn-loss': { type: 'string' },
    'cnn-contrast': { type: 'string' },
    'cnn-contrast-downsample': { type: 'string' },
    data: { type: 'string' },
    out: { type: 'string' },
    decoders: { type: 'string', default: 'cnn,gan' },
    'mei-neurons': { type: 'string' },
    pairs: { type: 'string', default: '0' },
    'pairs-for': { type: 'string', default: 'cnn' },
    'ae-budget': { type: 'string' },
    'gan-profile': { type: 'string', default: 'small' },
    split: { type: 'string', default: 'regions' },
    ceiling: { type: 'boolean', default: false },
    'response-noise': { type: 'string', default: '0' },
  },
});

const minutes = (v: string | undefined, dflt: number): number => {
  if (v === undefined) return dflt * 60;
  const s = parseDuration(v);
  if (Number.isNaN(s)) throw new Error(`not a duration: ${v} (use 90s, 30m, 2h)`);
  return s;
};

const quick = a.quick!;
const decoderBudget = minutes(a.budget, quick ? 3 : 45);
const encoderBudget = minutes(a['encoder-budget'], quick ? 2 : 20);
const recipe = a.recipe === 'report' ? 'report' : 'cortexcast';
const anchor = a.anchor === undefined ? (recipe === 'cortexcast' ? 'ridge' : 'none') : a.anchor === 'none' ? 'none' : 'ridge';
const anchorFolds = a['anchor-folds'] === undefined ? undefined : Number(a['anchor-folds']);
const cnnLoss = a['cnn-loss'] === undefined ? undefined : (a['cnn-loss'] as 'mse' | 'logssim' | 'mae' | 'mse+logssim');
const cnnContrast = a['cnn-contrast'] === undefined ? undefined : a['cnn-contrast'] === 'on';
const responseNoise = Number(a['response-noise']);
if (!(responseNoise >= 0)) throw new Error(`--response-noise: ${a['response-noise']} is not a standard deviation >= 0`);
const cnnContrastDownsample = a['cnn-contrast-downsample'] === undefined ? undefined : Number(a['cnn-contrast-downsample']);
const refinerLevels = a['refiner-levels'] === undefined ? undefined : a['refiner-levels'] === '0' ? 0 : 2;
const seeds = Array.from({ length: Number(a.seeds) }, (_, i) => i + 1);
const pairsFraction = Number(a.pairs);
const pairsFor = new Set(a['pairs-for']!.split(','));
const usesPairs = (kind: string): boolean => pairsFraction > 0 && pairsFor.has(kind);
const DECODERS = ['cnn', 'gan', 'latent-vae', 'latent-features'] as const;
type BenchDecoder = (typeof DECODERS)[number];
// --decoders none (or ''): ridge alone.
const decoders = (a.decoders === '' || a.decoders === 'none' ? [] : a.decoders!.split(',')).map((d) => {
  if (!(DECODERS as readonly string[]).includes(d)) throw new Error(`--decoders: unknown ${d} (${DECODERS.join(', ')})`);
  return d as BenchDecoder;
});
const aeBudget = minutes(a['ae-budget'], quick ? 3 : 15);
const ganProfile = a['gan-profile'] as 'small' | 'realtime';
if (ganProfile !== 'small' && ganProfile !== 'realtime') throw new Error(`--gan-profile: ${a['gan-profile']} is not small or realtime`);

const split = a.split as 'photos' | 'regions';
if (split !== 'photos' && split !== 'regions') throw new Error(`--split: ${a.split} is not photos or regions`);

function population(): { name: string; cfg: SynthConfig } {
  const base = { ...(quick ? SYNTH_PRESETS.small : SYNTH_PRESETS.default), split };
  // Dataset folders of the 'photos' split keep their old names, so earlier caches are reused.
  const suffix = `${quick ? '-quick' : ''}${split === 'regions' ? '-regions' : ''}`;
  if (a.population === 'second')
    return {
      name: `second${suffix}`,
      cfg: {
        ...base,
        trainTrials: quick ? 1000 : 2000,
        validationTrials: quick ? 150 : 250,
        simulator: { ...base.simulator, neurons: quick ? 1500 : 3000, seed: 11, complexFraction: 0.3, rfSigmaMedian: 3.4 },
      },
    };
  // A third population with other settings: mostly complex cells with small receptive fields, more neurons, other seed.
  if (a.population === 'third')
    return {
      name: `third${suffix}`,
      cfg: {
        ...base,
        trainTrials: quick ? 1200 : 3000,
        validationTrials: quick ? 150 : 300,
        simulator: { ...base.simulator, neurons: quick ? 2500 : 5000, seed: 23, complexFraction: 0.85, rfSigmaMedian: 2.0 },
      },
    };
  if (a.population !== 'default') throw new Error(`--population: ${a.population} is not default, second or third`);
  return { name: (quick ? 'small' : 'default') + (split === 'regions' ? '-regions' : ''), cfg: base };
}

const log = (s: string): void => void process.stderr.write(s + '\n');
const pop = population();
const out = resolve(a.out ?? join('.cache', 'bench-quality', pop.name));
const data = resolve(a.data ?? join(out, 'data'));
mkdirSync(out, { recursive: true });
if (!existsSync(join(data, 'meta'))) await synthesize(data, pop.cfg, {});

type Row = Record<string, number>;
interface TableRow {
  name: string;
  seed: number;
  row: Row;
  seconds: number;
  dir: string;
}
const table: TableRow[] = [];
const testRow = async (dir: string, dataDir = data): Promise<Row> => {
  const m = loadBundle(dir).manifest.metrics.test as Row | undefined;
  return m && Number.isFinite(m.fid) ? m : ((await evaluateBundle(dir, dataDir, { fid: 64, identification: false })).metrics as unknown as Row);
};

const t0 = Date.now();
const ridgeDir = join(out, 'ridge');
if (!existsSync(join(ridgeDir, 'manifest.json'))) await trainRidge({ data, out: ridgeDir, log });
table.push({ name: 'ridge', seed: 0, row: await testRow(ridgeDir), seconds: Number(loadBundle(ridgeDir).manifest.training.seconds ?? 0), dir: ridgeDir });

// cnn / gan: the cortexcast recipe; cnn-report etc. name what differs from it.
const variant = (kind: string): string =>
  [recipe === 'report' ? '-report' : '', (anchor === 'ridge') !== (recipe === 'cortexcast') ? `-anchor-${anchor}` : '', anchor === 'ridge' && anchorFolds !== undefined ? `-folds${anchorFolds}` : '', kind === 'cnn' && refinerLevels !== undefined ? `-levels${refinerLevels}` : '', kind === 'cnn' && cnnLoss ? `-${cnnLoss}` : '', kind === 'cnn' && cnnContrast !== undefined ? `-contrast-${cnnContrast ? 'on' : 'off'}` : '', kind === 'cnn' && cnnContrastDownsample !== undefined ? `-contrastgrid${cnnContrastDownsample}` : '', kind === 'gan' && ganProfile !== 'small' ? `-${ganProfile}` : '', usesPairs(kind) ? `-pairs${pairsFraction}` : '', responseNoise > 0 ? `-noise${responseNoise}` : ''].join('');
const label = (kind: string): string => `${kind}${variant(kind)}`;

for (const seed of seeds) {
  const tag = `seed${seed}`;
  let meis: string | undefined;
  const enc = join(out, tag, 'encoder');
  if (decoders.includes('gan') || decoders.some(usesPairs)) await encoderStage({ data: [data], out: enc, seed, budgetSeconds: encoderBudget, log });
  if (decoders.includes('gan')) {
    meis = join(out, tag, 'meis');
    // --quick: 128 MEIs (512 take ~14 min on the small preset here, longer than the rest of the pipeline).
    const meiNeurons = a['mei-neurons'] ?? (quick ? '128' : '512');
    await meiStage({ encoder: enc, out: meis, neurons: selectNeurons(enc, `top:${meiNeurons}`), log });
  }
  for (const kind of decoders) {
    if (kind === 'latent-vae' || kind === 'latent-features') {
      table.push({ name: kind, seed, ...(await latentStage(kind, seed)), dir: join(out, `seed${seed}`, kind) });
      continue;
    }
    const dir = join(out, tag, `${kind}${variant(kind) || '-cortexcast'}`);
    const started = Date.now();
    if (existsSync(join(dir, 'run', 'stop.json'))) {
      table.push({ name: label(kind), seed, row: await testRow(dir), seconds: Number(loadBundle(dir).manifest.training.seconds ?? 0), dir });
      continue;
    }
    const r = await trainDecoder({ kind, data, out: dir, seed, profile: kind === 'gan' ? ganProfile : undefined, recipe, anchor, anchorFolds, refinerLevels, loss: kind === 'cnn' ? cnnLoss : undefined, anchorContrast: kind === 'cnn' ? cnnContrast : undefined, contrastDownsample: kind === 'cnn' ? cnnContrastDownsample : undefined, budgetSeconds: decoderBudget, resume: true, validateEvery: kind === 'cnn' && recipe === 'cortexcast' ? undefined : quick ? 50 : 100, meis: kind === 'gan' ? meis : undefined, encoderPairs: usesPairs(kind) ? enc : undefined, pairsFraction: usesPairs(kind) ? pairsFraction : undefined, responseNoise, log });
    table.push({ name: label(kind), seed, row: r.manifest.metrics.test as Row, seconds: (Date.now() - started) / 1000, dir });
  }
}

/** The autoencoder (once, on images alone; seed 1), then this seed's readin chained with its frozen decoder. */
async function latentStage(kind: 'latent-vae' | 'latent-features', seed: number): Promise<{ row: Row; seconds: number }> {
  const space = kind === 'latent-vae' ? 'vae' : 'features';
  const ae = join(out, `autoencoder-${space}`);
  if (!existsSync(join(ae, 'run', 'stop.json'))) {
    const o = { data: [data], out: ae, budgetSeconds: aeBudget, resume: true, photoCrops: quick ? 3000 : undefined, log };
    if (space === 'vae') await trainAutoencoder(o);
    else await trainFeatureDecoder(o);
  }
  const dir = join(out, `seed${seed}`, kind);
  if (existsSync(join(dir, 'run', 'stop.json'))) return { row: await testRow(dir), seconds: Number(loadBundle(dir).manifest.training.seconds ?? 0) };
  const started = Date.now();
  const r = await trainLatent({ autoencoder: ae, data, out: dir, seed, budgetSeconds: decoderBudget, resume: true, log });
  return { row: r.manifest.metrics.test as Row, seconds: (Date.now() - started) / 1000 };
}

// Identification and the per-photo breakdown come from one more evaluation of each bundle (no FID).
const detail = new Map<string, { bySource?: SourceScores[] }>();
for (const t of table) {
  if (detail.has(t.dir)) continue;
  const r = await evaluateBundle(t.dir, data, { fid: 0, identification: true });
  detail.set(t.dir, { bySource: r.bySource });
  t.row.identLow = r.metrics.identLow ?? Number.NaN;
  t.row.identHigh = r.metrics.identHigh ?? Number.NaN;
}

const f = (v: number | undefined, d = 3): string => (v === undefined || !Number.isFinite(v) ? '   -  ' : v.toFixed(d).padStart(6));
const mean = (v: number[]): number => v.reduce((x, y) => x + y, 0) / v.length;
const fmt = (v: number[], d = 2): string => {
  const m = mean(v);
  const sd = Math.sqrt(v.reduce((x, y) => x + (y - m) ** 2, 0) / Math.max(1, v.length - 1));
  return v.length > 1 ? `${m.toFixed(d)}±${sd.toFixed(d)}` : m.toFixed(d);
};
const lines = [
  `bench:quality ${pop.name} (${data}), split ${split}, budget ${decoderBudget / 60} min per deep decoder, seeds ${seeds.join(',')}, test tier`,
  'decoder        seed  SSIML    MSE  FID-64    SSIM  PixCorr  ident-low  ident-high  seconds',
  ...table.map((t) => `${t.name.padEnd(14)} ${String(t.seed || '-').padStart(4)} ${f(t.row.ssiml)} ${f(t.row.mse)} ${f(t.row.fid)} ${f(t.row.ssim)} ${f(t.row.pixcorr)}     ${f(t.row.identLow)}      ${f(t.row.identHigh)} ${t.seconds.toFixed(0).padStart(8)}`),
];
const ridge = table[0].row;
const kinds = [...new Set(table.slice(1).map((t) => t.name))];
for (const kind of kinds) {
  const rows = table.filter((t) => t.name === kind);
  const ratio = (k: string): number[] => rows.map((t) => t.row[k] / ridge[k]);
  lines.push(`vs ridge  SSIML ${fmt(ratio('ssiml'))}  MSE ${fmt(ratio('mse'))}  FID ${fmt(ratio('fid'))}  ident low ${fmt(rows.map((t) => t.row.identLow), 3)} high ${fmt(rows.map((t) => t.row.identHigh), 3)} (ridge ${ridge.identLow.toFixed(3)} / ${ridge.identHigh.toFixed(3)})  (${kind})`);
}
// Per source photo: SSIML of each decoder (seeds averaged), so a decoder that suits one photo shows.
const sources = detail.get(table[0].dir)?.bySource?.map((b) => b.source) ?? [];
if (sources.length > 1) {
  const names = ['ridge', ...kinds];
  lines.push('', 'SSIML per source photo (test images; seeds averaged)', `${'photo'.padEnd(26)} images ${names.map((n) => n.padStart(Math.max(8, n.length))).join(' ')}`);
  for (const src of sources) {
    const cells = names.map((n) => {
      const v = table.filter((t) => t.name === n).map((t) => detail.get(t.dir)?.bySource?.find((b) => b.source === src)?.ssiml ?? Number.NaN);
      return mean(v).toFixed(3).padStart(Math.max(8, n.length));
    });
    const images = detail.get(table[0].dir)!.bySource!.find((b) => b.source === src)!.images;
    lines.push(`${src.padEnd(26)} ${String(images).padStart(6)} ${cells.join(' ')}`);
  }
}
lines.push(`total ${((Date.now() - t0) / 1000).toFixed(0)} s this invocation`);
console.log(lines.join('\n'));
writeFileSync(join(out, 'quality.txt'), lines.join('\n') + '\n');
writeFileSync(join(out, 'quality.json'), JSON.stringify(table.map(({ name, seed, row, seconds }) => ({ name, seed, row, seconds })), null, 1) + '\n');

if (a.ceiling) await ceiling();

/**
 * --ceiling: the same decoders on the same test images, trained (a) on noise-free responses (no trial
 * noise, no running modulation; evaluated on noise-free test responses too), (b) on 5x and 10x
 * the train trials and (c) both (noise-free, 10x). Each condition is this benchmark run again on its
 * own dataset (resumable); the ceiling of each metric is the best decoder under any condition, and
 * each decoder's gap fraction is the share of ridge's distance to that ceiling it closes.
 */
async function ceiling(): Promise<void> {
  if (split !== 'regions') throw new Error("--ceiling needs --split regions (the 'photos' split changes the test images when the train tier grows)");
  if (a.data) throw new Error('--ceiling simulates its datasets: leave out --data');
  const conditions: { name: string; slug: string; cfg: SynthConfig }[] = [
    { name: 'noise-free', slug: 'noise-free', cfg: { ...pop.cfg, noiseFree: true } },
    { name: '5x trials', slug: 'trials-x5', cfg: { ...pop.cfg, trainTrials: 5 * pop.cfg.trainTrials } },
    { name: '10x trials', slug: 'trials-x10', cfg: { ...pop.cfg, trainTrials: 10 * pop.cfg.trainTrials } },
    { name: 'noise-free 10x', slug: 'noise-free-x10', cfg: { ...pop.cfg, noiseFree: true, trainTrials: 10 * pop.cfg.trainTrials } },
  ];
  const passThrough = process.argv.slice(2).filter((x) => x !== '--ceiling');
  const results: { name: string; rows: { name: string; row: Row }[] }[] = [{ name: 'as recorded', rows: table }];
  for (const c of conditions) {
    const dir = join(out, `ceiling-${c.slug}`);
    const cData = join(dir, 'data');
    if (!existsSync(join(cData, 'meta'))) await synthesize(cData, c.cfg, {});
    log(`ceiling: ${c.name} -> ${dir}`);
    const child = spawnSync(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), ...passThrough, '--data', cData, '--out', dir], { stdio: ['ignore', 'ignore', 'inherit'] });
    if (child.status !== 0) throw new Error(`ceiling: the ${c.name} run failed (exit ${child.status})`);
    results.push({ name: c.name, rows: JSON.parse(readFileSync(join(dir, 'quality.json'), 'utf8')) as { name: string; row: Row }[] });
  }
  const names = ['ridge', ...kinds];
  const avg = (rows: { name: string; row: Row }[], n: string, k: string): number => mean(rows.filter((r) => r.name === n).map((r) => r.row[k]));
  const out2: string[] = ['', `ceiling (${pop.name}, same test images): SSIML / MSE per condition, seeds averaged`];
  out2.push(`${'decoder'.padEnd(16)} ${results.map((r) => r.name.padStart(17)).join(' ')}`);
  for (const n of names) out2.push(`${n.padEnd(16)} ${results.map((r) => `${avg(r.rows, n, 'ssiml').toFixed(3)} / ${avg(r.rows, n, 'mse').toFixed(4)}`.padStart(17)).join(' ')}`);
  for (const k of ['ssiml', 'mse']) {
    // The ceiling: the best score of any decoder under any of the conditions (less noise or more data).
    const candidates = results.slice(1).flatMap((r) => names.map((n) => ({ at: `${n}, ${r.name}`, v: avg(r.rows, n, k) })));
    const top = candidates.reduce((x, y) => (y.v < x.v ? y : x));
    const best = top.v;
    const r0 = avg(table, 'ridge', k);
    out2.push(`${k.toUpperCase()} ceiling ${best.toFixed(4)} (${top.at}); ridge as recorded ${r0.toFixed(4)}`);
    for (const n of kinds) {
      const d = table.filter((t) => t.name === n).map((t) => (r0 - t.row[k]) / (r0 - best));
      out2.push(`  gap closed ${k.toUpperCase()} ${fmt(d)}  vs ridge ${fmt(table.filter((t) => t.name === n).map((t) => t.row[k] / r0))}  (${n})`);
    }
  }
  console.log(out2.join('\n'));
  writeFileSync(join(out, 'ceiling.txt'), out2.join('\n') + '\n');
}
