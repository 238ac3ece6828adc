import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import { ccError } from '../../common/errors.js';
import { readNpy, writeNpy } from '../../common/npy.js';
import { SensoriumDataset } from '../../datasets/sensorium.js';
import { openDataset } from '../../datasets/dataset-source.js';
import { synthesize, type SynthConfig } from '../data/synth.js';
import { encoderStage, meiStage } from '../encoder/gan-inputs.js';
import { loadMeis } from '../encoder/meis.js';
import { NEURON_CORRELATION_FILE } from '../encoder/train-encoder.js';
import { neuronSubset, planPath, readJsonIf, readPlan, writeJsonAtomic, type Plan, type PlannedPreparation } from './plan.js';

/** prepare/<k>-<name>/done.json: the session's encoder and MEIs are complete. */
const PREPARED = z.object({ format: z.literal('cortexcast-experiment-prepared'), session: z.number().int(), meis: z.number().int().positive(), seconds: z.number() }).strict();

const doneFile = (expDir: string, p: PlannedPreparation): string => join(planPath(expDir, p.encoder), '..', 'done.json');

export const preparationDone = (expDir: string, p: PlannedPreparation): boolean => readJsonIf(doneFile(expDir, p), PREPARED) !== undefined;

/** The encoder's per-neuron validation correlation (which neurons it predicts well enough for an MEI). */
const neuronCorrelation = (encoder: string): Float32Array => readNpy(join(encoder, NEURON_CORRELATION_FILE)).data as Float32Array;

/** The k best-predicted of `candidates` (dataset columns), in column order: the readin's neurons. */
export function readinNeurons(correlation: Float32Array, candidates: readonly number[], k: number): number[] {
  return [...candidates].sort((a, b) => correlation[b] - correlation[a] || a - b).slice(0, k).sort((a, b) => a - b);
}

/**
 * The neurons whose MEIs a session needs: the readin takes the best-predicted `meiNeurons` of what
 * the decoder sees, so neuron-scaling needs the best of every subset (their union), the others the
 * best of all neurons.
 */
function meiNeuronsNeeded(plan: Plan, correlation: Float32Array): number[] {
  const k = plan.gan!.meiNeurons;
  const all = [...correlation.keys()];
  if (plan.experiment !== 'neuron-scaling') return readinNeurons(correlation, all, k);
  const union = new Set<number>();
  for (const v of plan.swept.values) for (const i of readinNeurons(correlation, neuronSubset(plan, Number(v)), k)) union.add(i);
  return [...union].sort((a, b) => a - b);
}

/** Another simulated mouse: the evaluated session's simulator settings with another seed. */
async function synthesiseMouse(plan: Plan, expDir: string, dir: string, seed: number, quiet?: boolean): Promise<void> {
  // params.json is the simulator's last file: present means the session is complete.
  if (existsSync(join(dir, 'meta/simulation/params.json'))) return;
  const sim = openDataset(planPath(expDir, plan.data[0])).simulation() as { config?: SynthConfig } | undefined;
  if (!sim?.config) throw ccError('CC_ERR_EXPERIMENT', expDir, `${plan.data[0]} has no simulator settings to make another mouse from`);
  await synthesize(dir, { ...sim.config, simulator: { ...sim.config.simulator, seed } }, { quiet, force: true });
}

/**
 * Preparation `index` of the plan: simulate the session when the plan makes it, train its encoder,
 * then the MEIs its runs' readins need. Each stage resumes (encoder checkpoint, MEI chunks); done.json
 * marks the whole preparation finished.
 */
export async function prepareSession(expDir: string, index: number, o: { quiet?: boolean; log?: (s: string) => void } = {}): Promise<'done' | 'skipped'> {
  const t0 = Date.now();
  const log = o.log ?? ((s: string) => process.stderr.write(s + '\n'));
  const plan = readPlan(expDir);
  const p = plan.prepare[index];
  if (!p) throw ccError('CC_ERR_EXPERIMENT', expDir, `no preparation ${index} (the plan has ${plan.prepare.length})`);
  if (preparationDone(expDir, p)) {
    log(`prepare ${index}: done already`);
    return 'skipped';
  }
  const data = planPath(expDir, plan.data[p.session]);
  if (p.synth) await synthesiseMouse(plan, expDir, data, p.synth.seed, o.quiet);
  const encoder = planPath(expDir, p.encoder);
  mkdirSync(encoder, { recursive: true });
  const g = plan.gan!;
  await encoderStage({ data: [data], out: encoder, seed: 1, profile: plan.training.profile, budgetSeconds: g.encoderBudgetSeconds, maxSteps: g.encoderMaxSteps, quiet: o.quiet, log });
  const neurons = meiNeuronsNeeded(plan, neuronCorrelation(encoder));
  const r = await meiStage({ encoder, out: planPath(expDir, p.meis), neurons, steps: g.meiSteps, quiet: o.quiet, log });
  writeJsonAtomic(doneFile(expDir, p), { format: 'cortexcast-experiment-prepared', session: p.session, meis: r.neurons.length, seconds: (Date.now() - t0) / 1000 });
  return 'done';
}

/**
 * The MEI folder a run's readin reads. Without a neuron subset: the session's own. With one: a folder
 * in the run with the MEIs of the subset's best-predicted neurons, indexed by their position in the
 * subset (the decoder's response vector holds only the subset).
 */
export function runMeis(expDir: string, plan: Plan, session: number, subset: number[] | undefined, runDir: string): string {
  const p = plan.prepare.find((x) => x.session === session);
  if (!p || !preparationDone(expDir, p)) throw ccError('CC_ERR_EXPERIMENT', expDir, `session ${session}'s encoder and MEIs are not ready (cortexcast experiment prepare ${expDir} --index ${p?.index ?? session})`);
  const dir = planPath(expDir, p.meis);
  if (!subset) return dir;
  const all = loadMeis(dir);
  const chosen = readinNeurons(neuronCorrelation(planPath(expDir, p.encoder)), subset, plan.gan!.meiNeurons);
  const row = new Map(all.neuronIndex.map((n, i) => [n, i]));
  const position = new Map(subset.map((n, i) => [n, i]));
  const P = all.height * all.width;
  const meis = new Float32Array(chosen.length * P);
  chosen.forEach((n, k) => {
    const r = row.get(n);
    if (r === undefined) throw ccError('CC_ERR_EXPERIMENT', expDir, `${dir} has no MEI of neuron ${n}; remove ${doneFile(expDir, p)} and prepare again`);
    meis.set(all.meis.subarray(r * P, (r + 1) * P), k * P);
  });
  const out = join(runDir, 'meis');
  mkdirSync(out, { recursive: true });
  writeNpy(join(out, 'meis.npy'), meis, [chosen.length, all.height, all.width]);
  writeNpy(join(out, 'neuron_index.npy'), BigInt64Array.from(chosen.map((n) => BigInt(position.get(n)!))));
  writeNpy(join(out, 'dataset_neuron_index.npy'), BigInt64Array.from(chosen.map(BigInt)));
  writeJsonAtomic(join(out, 'meis.json'), { complete: true, height: all.height, width: all.width, source: dir, note: 'MEIs of the neuron subset; neuron_index.npy indexes the subset, dataset_neuron_index.npy the dataset' });
  return out;
}
