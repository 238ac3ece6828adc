/**
 * npm run bench:quality -- [--quick] [--population default|second] [--seeds N] [--budget 45m]
 *   [--encoder-budget 20m] [--recipe cortexcast|report] [--anchor ridge|none] [--anchor-folds 0|5]
 *   [--pairs 0|0.5] [--pairs-for cnn,gan] [--refiner-levels 0|2] [--cnn-loss mse|logssim|mae|mse+logssim] [--cnn-contrast on|off] [--cnn-contrast-downsample 1|2|4]
 *   [--data DIR] [--out DIR] [--decoders cnn,gan,latent-vae,latent-features] [--ae-budget 15m] [--gan-profile small|realtime]
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
 * 30% complex cells, larger receptive fields); --quick uses the small preset with short budgets.
 */
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { parseDuration } from '../src/common/duration.js';
import { loadBundle } from '../src/models/bundle.js';
import { SYNTH_PRESETS, synthesize, type SynthConfig } from '../src/training/data/synth.js';
import { trainDecoder } from '../src/training/decoders/train-decoder.js';
import { encoderStage, meiStage } from '../src/training/encoder/gan-inputs.js';
import { selectNeurons } from '../src/training/encoder/meis.js';
import { evaluateBundle } from '../src/training/eval/evaluate.js';
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
const cnnContrastDownsample = a['cnn-contrast-downsample'] === undefined ? undefined : Number(a['cnn-contrast-downsample']);
const refinerLevels = a['refiner-levels'] === undefined ? undefined : a['refiner-levels'] === '0' ? 0 : 2;
const seeds = Array.from({ length: Number(a.seeds) }, (_, i) => i + 1);
const pairsFraction = Number(a.pairs);
const pairsFor = new Set(a['pairs-for']!.split(','));
const usesPairs = (kind: string): boolean => pairsFraction > 0 && pairsFor.has(kind);
const DECODERS = ['cnn', 'gan', 'latent-vae', 'latent-features'] as const;
type BenchDecoder = (typeof DECODERS)[number];
const decoders = a.decoders!.split(',').map((d) => {
  if (!(DECODERS as readonly string[]).includes(d)) throw new Error(`--decoders: unknown ${d} (${DECODERS.join(', ')})`);
  return d as BenchDecoder;
});
const aeBudget = minutes(a['ae-budget'], quick ? 3 : 15);
const ganProfile = a['gan-profile'] as 'small' | 'realtime';
if (ganProfile !== 'small' && ganProfile !== 'realtime') throw new Error(`--gan-profile: ${a['gan-profile']} is not small or realtime`);

function population(): { name: string; cfg: SynthConfig } {
  const base = quick ? SYNTH_PRESETS.small : SYNTH_PRESETS.default;
  if (a.population === 'second')
    return {
      name: `second${quick ? '-quick' : ''}`,
      cfg: {
        ...base,
        trainTrials: quick ? 1000 : 2000,
        validationTrials: quick ? 150 : 250,
        simulator: { ...base.simulator, neurons: quick ? 1500 : 3000, seed: 11, complexFraction: 0.3, rfSigmaMedian: 3.4 },
      },
    };
  return { name: quick ? 'small' : 'default', cfg: base };
}

const log = (s: string): void => void process.stderr.write(s + '\n');
const pop = population();
const out = resolve(a.out ?? join('.cache', 'bench-quality', pop.name));
const data = resolve(a.data ?? join(out, 'data'));
mkdirSync(out, { recursive: true });
if (!existsSync(join(data, 'meta'))) await synthesize(data, pop.cfg, {});

type Row = Record<string, number>;
const table: { name: string; seed: number; row: Row; seconds: number }[] = [];
const testRow = async (dir: string): Promise<Row> => {
  const m = loadBundle(dir).manifest.metrics.test as Row | undefined;
  return m && Number.isFinite(m.fid) ? m : ((await evaluateBundle(dir, data, { fid: 64 })).metrics as unknown as Row);
};

const t0 = Date.now();
const ridgeDir = join(out, 'ridge');
if (!existsSync(join(ridgeDir, 'manifest.json'))) await trainRidge({ data, out: ridgeDir, log });
table.push({ name: 'ridge', seed: 0, row: await testRow(ridgeDir), seconds: Number(loadBundle(ridgeDir).manifest.training.seconds ?? 0) });

// cnn / gan: the cortexcast recipe; cnn-report etc. name what differs from it.
const variant = (kind: string): string =>
  [recipe === 'report' ? '-report' : '', (anchor === 'ridge') !== (recipe === 'cortexcast') ? `-anchor-${anchor}` : '', anchor === 'ridge' && anchorFolds !== undefined ? `-folds${anchorFolds}` : '', kind === 'cnn' && refinerLevels !== undefined ? `-levels${refinerLevels}` : '', kind === 'cnn' && cnnLoss ? `-${cnnLoss}` : '', kind === 'cnn' && cnnContrast !== undefined ? `-contrast-${cnnContrast ? 'on' : 'off'}` : '', kind === 'cnn' && cnnContrastDownsample !== undefined ? `-contrastgrid${cnnContrastDownsample}` : '', kind === 'gan' && ganProfile !== 'small' ? `-${ganProfile}` : '', usesPairs(kind) ? `-pairs${pairsFraction}` : ''].join('');
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
      table.push({ name: kind, seed, ...(await latentStage(kind, seed)) });
      continue;
    }
    const dir = join(out, tag, `${kind}${variant(kind) || '-cortexcast'}`);
    const started = Date.now();
    if (existsSync(join(dir, 'run', 'stop.json'))) {
      table.push({ name: label(kind), seed, row: await testRow(dir), seconds: Number(loadBundle(dir).manifest.training.seconds ?? 0) });
      continue;
    }
    const r = await trainDecoder({ kind, data, out: dir, seed, profile: kind === 'gan' ? ganProfile : undefined, recipe, anchor, anchorFolds, refinerLevels, loss: kind === 'cnn' ? cnnLoss : undefined, anchorContrast: kind === 'cnn' ? cnnContrast : undefined, contrastDownsample: kind === 'cnn' ? cnnContrastDownsample : undefined, budgetSeconds: decoderBudget, resume: true, validateEvery: kind === 'cnn' && recipe === 'cortexcast' ? undefined : quick ? 50 : 100, meis: kind === 'gan' ? meis : undefined, encoderPairs: usesPairs(kind) ? enc : undefined, pairsFraction: usesPairs(kind) ? pairsFraction : undefined, log });
    table.push({ name: label(kind), seed, row: r.manifest.metrics.test as Row, seconds: (Date.now() - started) / 1000 });
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

const f = (v: number | undefined, d = 3): string => (v === undefined || !Number.isFinite(v) ? '   -  ' : v.toFixed(d).padStart(6));
const lines = [
  `bench:quality ${pop.name} (${data}), budget ${decoderBudget / 60} min per deep decoder, seeds ${seeds.join(',')}, test tier`,
  'decoder        seed  SSIML    MSE  FID-64    SSIM  PixCorr  seconds',
  ...table.map((t) => `${t.name.padEnd(14)} ${String(t.seed || '-').padStart(4)} ${f(t.row.ssiml)} ${f(t.row.mse)} ${f(t.row.fid)} ${f(t.row.ssim)} ${f(t.row.pixcorr)} ${t.seconds.toFixed(0).padStart(8)}`),
];
const ridge = table[0].row;
for (const kind of decoders) {
  const rows = table.filter((t) => t.name.startsWith(kind));
  const ratio = (k: string): number[] => rows.map((t) => t.row[k] / ridge[k]);
  const fmt = (v: number[]): string => {
    const m = v.reduce((x, y) => x + y, 0) / v.length;
    const sd = Math.sqrt(v.reduce((x, y) => x + (y - m) ** 2, 0) / Math.max(1, v.length - 1));
    return v.length > 1 ? `${m.toFixed(2)}±${sd.toFixed(2)}` : m.toFixed(2);
  };
  lines.push(`vs ridge  SSIML ${fmt(ratio('ssiml'))}  MSE ${fmt(ratio('mse'))}  FID ${fmt(ratio('fid'))}  (${kind})`);
}
lines.push(`total ${((Date.now() - t0) / 1000).toFixed(0)} s this invocation`);
console.log(lines.join('\n'));
writeFileSync(join(out, 'quality.txt'), lines.join('\n') + '\n');
