import { writeFileAtomic } from '../../common/atomic-file.js';
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import { z } from 'zod';
import { ccError } from '../../common/errors.js';
import { readJsonFile } from '../../common/json-file.js';
import { Rng } from '../../models/rng.js';
import { GAN_MEI_STEPS } from '../encoder/gan-inputs.js';
import { SensoriumDataset } from '../../datasets/sensorium.js';
import { openDataset } from '../../datasets/dataset-source.js';
import { DECODER_CHOICES, EXPERIMENT_NAMES, EXPERIMENTS, LOSSES, SWEPT_KEY, valueSlug, type DecoderChoice, type ExperimentName, type SweptValue } from './experiments.js';

/** What `cortexcast experiment <name>` was asked for; the plan is made from it and nothing else. */
export interface ExperimentOptions {
  name: ExperimentName;
  /** Dataset folder(s): the first is the evaluated session; `sessions` pools the others (synthesised when too few are given). */
  data: string[];
  out: string;
  /** Seeds of every swept value: a count n (1..n) or the list itself. Default 3, as the report's figures. */
  seeds?: number | number[];
  decoder?: DecoderChoice;
  /** 'report' (default): the report's decoders, whose settings these experiments vary; 'cortexcast': the ridge-anchored recipes. */
  recipe?: 'report' | 'cortexcast';
  profile?: 'small' | 'paper';
  /** Per run: wall-clock budget of one invocation, step cap, epochs, validation cadence (as `train cnn|gan`). */
  budgetSeconds?: number;
  maxSteps?: number;
  epochs?: number;
  validateEvery?: number;
  /** Swept values instead of the experiment's default grid (strings as given on the command line). */
  grid?: string[];
  /** neuron-scaling: seed of the random neuron order whose first n neurons are the subset of n. */
  subsetSeed?: number;
  /** GAN: the encoder behind the MEIs (budget, step cap) and the MEIs of the readin (count, ascent steps). */
  encoderBudgetSeconds?: number;
  encoderMaxSteps?: number;
  meiNeurons?: number;
  meiSteps?: number;
}

const SETTINGS = z
  .object({
    maxTrain: z.number().int().positive().optional(),
    neurons: z.number().int().positive().optional(),
    readinChannels: z.number().int().positive().optional(),
    transform: z.boolean().optional(),
    coordinates: z.boolean().optional(),
    loss: z.enum(LOSSES).optional(),
    sessions: z.number().int().positive().optional(),
  })
  .strict();

const RUN = z
  .object({
    index: z.number().int().min(0),
    id: z.string(),
    value: z.union([z.number(), z.string()]),
    seed: z.number().int().positive(),
    /** Run folder, relative to the experiment folder. */
    dir: z.string(),
    settings: SETTINGS,
  })
  .strict();

/** A session whose GAN inputs (encoder, MEIs) are made before the runs; `synth` when the session itself is simulated first. */
const PREPARE = z
  .object({
    index: z.number().int().min(0),
    /** Index into plan.data. */
    session: z.number().int().min(0),
    encoder: z.string(),
    meis: z.string(),
    /** Simulate this session first: the evaluated session's simulator with another seed (another mouse). */
    synth: z.object({ seed: z.number().int().positive() }).strict().optional(),
  })
  .strict();

export const PLAN = z
  .object({
    format: z.literal('cortexcast-experiment'),
    formatVersion: z.literal(1),
    experiment: z.enum(EXPERIMENT_NAMES),
    figure: z.string(),
    swept: z.object({ key: z.string(), axis: z.string(), scale: z.enum(['log', 'category']), values: z.array(z.union([z.number(), z.string()])).min(1) }).strict(),
    decoder: z.enum(DECODER_CHOICES),
    training: z
      .object({
        recipe: z.enum(['report', 'cortexcast']),
        profile: z.enum(['small', 'paper']),
        budgetSeconds: z.number().positive().optional(),
        maxSteps: z.number().int().positive().optional(),
        epochs: z.number().int().positive().optional(),
        validateEvery: z.number().int().positive().optional(),
      })
      .strict(),
    seeds: z.array(z.number().int().positive()).min(1),
    /** Dataset folders: absolute, or relative to the experiment folder (sessions it simulates). data[0] is evaluated. */
    data: z.array(z.string()).min(1),
    /** neuron-scaling: a random order of the evaluated session's neurons; the subset of n is its first n. */
    neuronOrder: z.array(z.number().int().min(0)).optional(),
    gan: z
      .object({
        encoderBudgetSeconds: z.number().positive().optional(),
        encoderMaxSteps: z.number().int().positive().optional(),
        meiNeurons: z.number().int().positive(),
        meiSteps: z.number().int().positive(),
      })
      .strict()
      .optional(),
    prepare: z.array(PREPARE),
    runs: z.array(RUN).min(1),
  })
  .strict()
  // run-one, the local runner and Slurm tasks name a run by its index: it must be its position.
  .refine((p) => p.runs.every((r, i) => r.index === i), { message: 'runs[i].index must be i', path: ['runs'] });

export type Plan = z.infer<typeof PLAN>;
export type PlannedRun = Plan['runs'][number];
export type PlannedPreparation = Plan['prepare'][number];

export const PLAN_FILE = 'plan.json';
/** The GAN encoder's default wall-clock budget (bench:quality's): the MEIs need a useful encoder, not the best one. */
export const DEFAULT_ENCODER_BUDGET_SECONDS = 20 * 60;
/** MEIs per session for the readin (bench:quality's 512 best-predicted neurons on the default preset). */
export const DEFAULT_MEI_NEURONS = 512;

const seedList = (s: ExperimentOptions['seeds']): number[] => {
  if (typeof s === 'number' && !(Number.isInteger(s) && s > 0)) throw ccError('CC_ERR_OPTION', `--seeds ${s}: a count of seeds is a positive integer`);
  const list = s === undefined ? [1, 2, 3] : Array.isArray(s) ? s : Array.from({ length: s }, (_, i) => i + 1);
  if (!list.length || list.some((x) => !Number.isInteger(x) || x <= 0) || new Set(list).size !== list.length) throw ccError('CC_ERR_OPTION', `--seeds ${list.join(',')}: positive integers, each once`);
  return list;
};

/**
 * The plan of an experiment: every run (swept value x seed) with what it sets, and for the GAN the
 * sessions whose encoder and MEIs come first. Made from the options and the evaluated dataset's size
 * alone, so the same command makes the same plan (a rerun compares them).
 */
export function buildPlan(o: ExperimentOptions): Plan {
  const def = EXPERIMENTS[o.name];
  const decoder = o.decoder ?? 'gan';
  if (!def.decoders.includes(decoder)) throw ccError('CC_ERR_OPTION', `experiment ${o.name} varies a setting of the ${def.decoders.join(' and ')} decoder${def.decoders.length > 1 ? 's' : ''}; --decoder ${decoder} has none`);
  if (!o.data.length) throw ccError('CC_ERR_OPTION', 'no --data folder given');
  if (o.name !== 'sessions' && o.data.length > 1) throw ccError('CC_ERR_OPTION', `experiment ${o.name} trains on one session; several --data folders are for 'sessions'`);
  const data = o.data.map((d) => resolve(d));
  const ds = openDataset(data[0]);
  const extent = { trainTrials: ds.indices('train').length, neurons: ds.neurons };
  const values: SweptValue[] = o.grid?.length ? o.grid.map((v) => def.parse(v.trim(), extent)) : def.defaultGrid(extent);
  if (new Set(values.map(String)).size !== values.length) throw ccError('CC_ERR_OPTION', `--grid lists a value twice: ${values.join(',')}`);
  const seeds = seedList(o.seeds);

  // sessions: the evaluated mouse first, then the given ones, then simulated ones (other simulator seeds).
  const synthesised: { session: number; seed: number }[] = [];
  if (o.name === 'sessions') {
    const needed = Math.max(...values.map(Number));
    const sim = ds.simulation() as { config?: { simulator?: { seed?: number } } } | undefined;
    const base = sim?.config?.simulator?.seed;
    for (let k = data.length; k < needed; k++) {
      if (base === undefined) throw ccError('CC_ERR_OPTION', `pooling ${needed} mice needs ${needed} --data folders (${data[0]} is not simulated, so no other mice can be made from it)`);
      data.push(join('mice', `mouse${k + 1}`));
      synthesised.push({ session: k, seed: base + 1000 * k });
    }
  }
  const gan = decoder === 'gan';
  const sessionsTrained = o.name === 'sessions' ? data.length : 1;
  const prepare: PlannedPreparation[] = gan
    ? data.slice(0, sessionsTrained).map((d, k) => {
        const name = `${k}-${basename(d)}`;
        const synth = synthesised.find((s) => s.session === k);
        return { index: k, session: k, encoder: join('prepare', name, 'encoder'), meis: join('prepare', name, 'meis'), ...(synth && { synth: { seed: synth.seed } }) };
      })
    : [];

  let neuronOrder: number[] | undefined;
  if (o.name === 'neuron-scaling') neuronOrder = new Rng(o.subsetSeed ?? 1).shuffle([...Array(ds.neurons).keys()]);

  const key = SWEPT_KEY[o.name];
  const runs: PlannedRun[] = [];
  for (const value of values)
    for (const seed of seeds) {
      const id = `${key}-${valueSlug(value)}-seed${seed}`;
      runs.push({ index: runs.length, id, value, seed, dir: join('runs', id), settings: def.settings(value) });
    }
  const plan: Plan = {
    format: 'cortexcast-experiment',
    formatVersion: 1,
    experiment: o.name,
    figure: def.figure,
    swept: { key, axis: def.axis, scale: def.scale, values },
    decoder,
    training: {
      recipe: o.recipe ?? 'report',
      profile: o.profile ?? 'small',
      ...(o.budgetSeconds !== undefined && { budgetSeconds: o.budgetSeconds }),
      ...(o.maxSteps !== undefined && { maxSteps: o.maxSteps }),
      ...(o.epochs !== undefined && { epochs: o.epochs }),
      ...(o.validateEvery !== undefined && { validateEvery: o.validateEvery }),
    },
    seeds,
    data,
    ...(neuronOrder && { neuronOrder }),
    ...(gan && {
      gan: {
        // A step cap alone replaces the default budget (tests, quick looks); both may be given.
        encoderBudgetSeconds: o.encoderBudgetSeconds ?? (o.encoderMaxSteps === undefined ? DEFAULT_ENCODER_BUDGET_SECONDS : undefined),
        encoderMaxSteps: o.encoderMaxSteps,
        meiNeurons: o.meiNeurons ?? DEFAULT_MEI_NEURONS,
        meiSteps: o.meiSteps ?? GAN_MEI_STEPS,
      },
    }),
    prepare,
    runs,
  };
  return PLAN.parse(plan);
}

/** JSON with keys sorted and undefined fields dropped: two plans are the same when these strings are. */
const canonical = (v: unknown): string =>
  JSON.stringify(v, (_, x: unknown) => (x && typeof x === 'object' && !Array.isArray(x) ? Object.fromEntries(Object.entries(x).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) : x)) ?? 'absent';

/** The plan of an experiment folder, validated (a hand-edited or foreign file names its field). */
export function readPlan(dir: string): Plan {
  if (!existsSync(join(dir, PLAN_FILE))) throw ccError('CC_ERR_EXPERIMENT', dir, `no ${PLAN_FILE}: not an experiment folder (cortexcast experiment <name> --out DIR makes one)`);
  return readJsonFile(join(dir, PLAN_FILE), PLAN, 'CC_ERR_EXPERIMENT', dir);
}

const isRecord = (v: unknown): v is Record<string, unknown> => !!v && typeof v === 'object' && !Array.isArray(v);

/** The fields whose values differ, one level into objects (training.maxSteps, swept.values); runs by their count. */
function differences(a: Plan, b: Plan): string[] {
  const show = (v: unknown): string => {
    const s = canonical(v);
    return s.length > 80 ? `${s.slice(0, 77)}...` : s;
  };
  const diff = (x: Record<string, unknown>, y: Record<string, unknown>, prefix: string, deeper: boolean): string[] =>
    [...new Set([...Object.keys(x), ...Object.keys(y)])]
      .filter((k) => canonical(x[k]) !== canonical(y[k]))
      .flatMap((k) => {
        if (!prefix && k === 'runs') return [`runs: ${a.runs.length} planned there, ${b.runs.length} now`];
        if (deeper && isRecord(x[k]) && isRecord(y[k])) return diff(x[k] as Record<string, unknown>, y[k] as Record<string, unknown>, `${k}.`, false);
        return [`${prefix}${k}: ${show(x[k])} there, ${show(y[k])} now`];
      });
  return diff(a, b, '', true);
}

/** A plan with its seeds as a set and its runs by id, indices aside: a plan given more seeds later lists its runs in another order. */
const unordered = (p: Plan): Plan => ({ ...p, seeds: [...p.seeds].sort((a, b) => a - b), runs: p.runs.map((r) => ({ ...r, index: 0 })).sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)) });

/**
 * The folder's plan with the seeds of `now` that it lacks, when `now` is that plan with more seeds and
 * nothing else changed: the new runs are appended, so the planned runs keep their index (a Slurm array
 * task in flight still means the same run) and their folders.
 */
function withMoreSeeds(prev: Plan, now: Plan): Plan | undefined {
  const added = now.seeds.filter((s) => !prev.seeds.includes(s));
  if (!added.length || prev.seeds.some((s) => !now.seeds.includes(s))) return undefined;
  const extended: Plan = {
    ...prev,
    seeds: [...prev.seeds, ...added].sort((a, b) => a - b),
    runs: [...prev.runs, ...now.runs.filter((r) => added.includes(r.seed)).map((r, i) => ({ ...r, index: prev.runs.length + i }))],
  };
  return canonical(unordered(extended)) === canonical(unordered(now)) ? extended : undefined;
}

/**
 * Write the plan into a new experiment folder, or check that the folder's plan is this one: a rerun
 * of the same command resumes; the same command with more seeds adds their runs (the finished ones
 * stay); any other change is refused, naming what changed, since its finished runs would answer
 * another question.
 */
export function writeOrCheckPlan(dir: string, plan: Plan): { state: 'new' | 'same' | 'more-seeds'; plan: Plan } {
  const file = join(dir, PLAN_FILE);
  if (existsSync(file)) {
    const prev = readPlan(dir);
    if (canonical(unordered(prev)) === canonical(unordered(plan))) return { state: 'same', plan: prev };
    const extended = withMoreSeeds(prev, plan);
    if (extended) {
      writeJsonAtomic(file, extended);
      return { state: 'more-seeds', plan: extended };
    }
    const diff = differences(unordered(prev), unordered(plan));
    const hint = prev.seeds.every((s) => plan.seeds.includes(s)) ? '' : ` (more seeds may be added: the list must keep the folder's seeds ${prev.seeds.join(',')})`;
    throw ccError('CC_ERR_EXPERIMENT', dir, `the folder holds another plan (${diff.join('; ')})${hint}; rerun with the options it was made with (or 'cortexcast experiment resume ${dir}'), or use a new --out`);
  }
  mkdirSync(dir, { recursive: true });
  writeJsonAtomic(file, plan);
  return { state: 'new', plan };
}

// Written through a temporary file and a rename, so a reader (status, another task) never sees half a file.
export { writeFileAtomic };

export function writeJsonAtomic(file: string, value: unknown): void {
  writeFileAtomic(file, JSON.stringify(value, null, 1) + '\n');
}

/** A plan path (relative to the experiment folder, or absolute) as an absolute path. */
export const planPath = (dir: string, p: string): string => resolve(dir, p);

/** The runs value by value, seeds in order: how results and progress list them (a plan given more seeds later holds its added runs last). */
export const runsByValue = (plan: Plan): PlannedRun[] =>
  [...plan.runs].sort((a, b) => plan.swept.values.indexOf(a.value) - plan.swept.values.indexOf(b.value) || a.seed - b.seed);

/** The neuron subset of n for neuron-scaling: the first n of the plan's order, in dataset column order. */
export function neuronSubset(plan: Plan, n: number): number[] {
  if (!plan.neuronOrder) throw ccError('CC_ERR_EXPERIMENT', plan.experiment, 'the plan has no neuron order');
  if (n > plan.neuronOrder.length) throw ccError('CC_ERR_EXPERIMENT', plan.experiment, `a subset of ${n} neurons out of ${plan.neuronOrder.length}`);
  return plan.neuronOrder.slice(0, n).sort((a, b) => a - b);
}

/** Whether a file exists and parses: the cheap probe status and the runners use. */
export function readJsonIf<S extends z.ZodTypeAny>(file: string, schema: S): z.output<S> | undefined {
  if (!existsSync(file)) return undefined;
  try {
    const r = schema.safeParse(JSON.parse(readFileSync(file, 'utf8')));
    return r.success ? (r.data as z.output<S>) : undefined;
  } catch {
    return undefined;
  }
}
