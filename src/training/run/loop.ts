import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { ccError } from '../../common/errors.js';
import { progress } from '../../common/progress.js';
import { Rng } from '../../models/rng.js';
import { durationEstimate, STEPS_BEFORE_ESTIMATE } from './duration-estimate.js';
import { readRunCheckpoint, refuseChangedSettings, recoverCheckpointFolder, runCheckpointFile, saveCheckpointFolder, writeConfig, writeHistory, writeRunCheckpoint, writeStop, writeValidationGrid, type GridRow, type StopRecord } from './run-folder.js';

/** One validated point of a run: where it was and what validation scored. */
export interface RunRecord {
  epoch: number;
  step: number;
  seconds: number;
  trainLoss: number;
  [metric: string]: number;
}

export interface StepResult {
  /** The optimised objective: checked for divergence. */
  loss: number;
  /** What the progress bar and `trainLoss` show (default `loss`), e.g. the encoder's Poisson term alone. */
  shown?: number;
  /** Time of the step's model runs (the progress bar's ms/step). */
  ms: number;
}

export interface Validation {
  scores: Record<string, number>;
  /** Validation reconstructions to draw in validation-grid.png when this point is the best so far. */
  grid?: { rows: GridRow[]; count: number; height: number; width: number };
}

/**
 * A model's part of a training run: what it trains, one optimisation step, how validation scores it
 * and what it writes. Everything else (batches, progress, cadence, budget, best selection, checkpoint
 * and resume, the run folder) is the loop's.
 */
export interface Recipe {
  /** In logs, progress bars and errors. */
  readonly name: string;
  /** Train-tier trials of each session: the loop shuffles them each epoch and draws batches. */
  readonly trainCounts: number[];
  readonly batch: number;
  /** Written to config.json. */
  readonly config: Record<string, unknown>;
  /** The validation metric that picks the exported checkpoint. */
  readonly selection: { metric: string; mode: 'min' | 'max' };
  /** Validation metrics drawn in curves.svg beside the training loss. */
  readonly curves: { key: string; label: string }[];
  /** Optimisation steps taken so far (restored by loadCheckpoint). */
  readonly steps: number;
  /** One step on these train rows (per session); `rng` is the run's stream (label noise, noise inputs). */
  step(rows: number[][], rng: Rng): Promise<StepResult>;
  validate(): Promise<Validation>;
  /** Write the bundle(s) of the current weights: called each time validation improves. */
  exportBest(record: RunRecord): Promise<void>;
  /** Called after every validation with the new record (learning-rate schedules). */
  afterValidation?(record: RunRecord): void;
  /** Save the trained state (weights, optimiser, schedules) under dir; the loop adds its own record. */
  saveCheckpoint(dir: string): void;
  loadCheckpoint(dir: string): void;
}

export interface RunOptions {
  /** Run folder: config.json, metrics.csv/json, curves.svg, validation-grid.png, stop.json, checkpoint/. */
  run: string;
  epochs: number;
  maxSteps?: number;
  /** Wall-clock seconds from `startedAt`: no step starts after it is spent (one step always runs). */
  budgetSeconds?: number;
  /** Validate every this many steps (default: at the end of every epoch). */
  validateEvery?: number;
  /** Stop after this many validations in a row without a better selection metric. */
  patience?: number;
  resume?: boolean;
  /** Seed of the shuffling stream for a run (re)started at this epoch. */
  shuffleSeed: (startEpoch: number) => number;
  /** Date.now() when the invocation started (setup counts against the budget). */
  startedAt: number;
  quiet?: boolean;
  log: (s: string) => void;
}

export interface RunResult {
  history: RunRecord[];
  best: RunRecord;
  stop: StopRecord;
}

const better = (sel: Recipe['selection'], a: RunRecord, b: RunRecord | undefined): boolean =>
  !b || (sel.mode === 'min' ? a[sel.metric] < b[sel.metric] : a[sel.metric] > b[sel.metric]);

/** Train `recipe` to the end of its epochs, steps, budget or patience; the best validated point is exported. */
// Over 80 lines: the epoch/step loop and its stop conditions read best as one piece; validation is the inner closure.
export async function runTraining(recipe: Recipe, o: RunOptions): Promise<RunResult> {
  mkdirSync(o.run, { recursive: true });
  const ckpt = join(o.run, 'checkpoint');
  if (o.resume) recoverCheckpointFolder(ckpt);
  // A resumed run continues the same training: weights trained under other settings would be mixed in silently.
  if (o.resume) refuseChangedSettings(o.run, recipe.config);
  writeConfig(o.run, recipe.config);
  let history: RunRecord[] = [];
  let startEpoch = 1;
  if (o.resume && existsSync(runCheckpointFile(ckpt))) {
    const saved = readRunCheckpoint(ckpt);
    recipe.loadCheckpoint(ckpt);
    history = saved.history;
    startEpoch = saved.epoch + 1;
    o.log(`${recipe.name}: resumed after epoch ${saved.epoch} (step ${recipe.steps})`);
  }
  let best = history.reduce<RunRecord | undefined>((b, r) => (better(recipe.selection, r, b) ? r : b), undefined);
  let sinceBest = best ? history.length - 1 - history.indexOf(best) : 0;
  const rng = new Rng(o.shuffleSeed(startEpoch));
  const stepsPerEpoch = Math.max(1, Math.floor(Math.max(...recipe.trainCounts) / recipe.batch));
  const orders = recipe.trainCounts.map((n) => [...Array(n).keys()]);
  const rows = recipe.trainCounts.map(() => new Array<number>(recipe.batch));

  const validate = async (epoch: number, trainLoss: number): Promise<void> => {
    const v = await recipe.validate();
    const rec: RunRecord = { epoch, step: recipe.steps, seconds: (Date.now() - o.startedAt) / 1000, trainLoss, ...v.scores };
    history.push(rec);
    const improved = better(recipe.selection, rec, best);
    const shown = recipe.curves.map((c) => `${c.label} ${rec[c.key]?.toFixed(3)}`).join(' ');
    o.log(`${recipe.name} epoch ${epoch} step ${rec.step}: train loss ${trainLoss.toFixed(4)}; validation ${shown}${improved ? ' (best)' : ''}`);
    if (improved) {
      best = rec;
      sinceBest = 0;
      await recipe.exportBest(rec);
      if (v.grid) writeValidationGrid(o.run, v.grid);
    } else sinceBest++;
    recipe.afterValidation?.(rec);
    writeHistory(o.run, recipe.name, history, recipe.curves);
    saveCheckpointFolder(ckpt, (dir) => {
      recipe.saveCheckpoint(dir);
      writeRunCheckpoint(dir, { epoch, history });
    });
  };

  let reason: StopRecord['reason'] = 'epochs';
  const firstStep = recipe.steps;
  // Timed from the end of the invocation's first step, which also compiles and allocates.
  let timedFrom = 0;
  for (let epoch = startEpoch; epoch <= o.epochs && reason === 'epochs'; epoch++) {
    orders.forEach((ord) => rng.shuffle(ord));
    const bar = progress(`${recipe.name} epoch ${epoch}/${o.epochs}`, stepsPerEpoch, { quiet: o.quiet, extra: 'loss {loss} {ms} ms/step' });
    let lossSum = 0;
    let steps = 0;
    for (let s = 0; s < stepsPerEpoch; s++) {
      if (o.maxSteps !== undefined && recipe.steps >= o.maxSteps) {
        reason = 'max-steps';
        break;
      }
      if (o.budgetSeconds !== undefined && recipe.steps > firstStep && (Date.now() - o.startedAt) / 1000 >= o.budgetSeconds) {
        reason = 'budget';
        break;
      }
      // Sessions with fewer trials wrap around within the epoch.
      orders.forEach((ord, k) => {
        for (let b = 0; b < recipe.batch; b++) rows[k][b] = ord[(s * recipe.batch + b) % ord.length];
      });
      const r = await recipe.step(rows, rng);
      if (!Number.isFinite(r.loss)) throw ccError('CC_ERR_TRAINING_DIVERGED', recipe.name, recipe.steps, r.loss);
      const shown = r.shown ?? r.loss;
      lossSum += shown;
      steps++;
      bar.tick(1, { loss: shown.toFixed(4), ms: (r.ms | 0).toString() });
      const taken = recipe.steps - firstStep;
      if (taken === 1) timedFrom = Date.now();
      if (taken === STEPS_BEFORE_ESTIMATE)
        o.log(
          durationEstimate({
            name: recipe.name,
            epochs: o.epochs,
            stepsDone: recipe.steps,
            stepsTotal: o.epochs * stepsPerEpoch,
            secondsPerStep: (Date.now() - timedFrom) / 1000 / (STEPS_BEFORE_ESTIMATE - 1),
            elapsedSeconds: (Date.now() - o.startedAt) / 1000,
            maxSteps: o.maxSteps,
            budgetSeconds: o.budgetSeconds,
            patience: o.patience,
          }),
        );
      if (o.validateEvery && recipe.steps % o.validateEvery === 0) await validate(epoch, lossSum / steps);
      if (o.patience !== undefined && sinceBest >= o.patience) {
        reason = 'patience';
        break;
      }
    }
    bar.stop();
    const lastValidated = history.length ? history[history.length - 1].step : -1;
    if (steps && (!o.validateEvery || (reason !== 'epochs' && lastValidated !== recipe.steps))) await validate(epoch, lossSum / steps);
    if (reason === 'epochs' && o.patience !== undefined && sinceBest >= o.patience) reason = 'patience';
  }
  if (!best) throw ccError('CC_ERR_OPTION', 'training ran no steps (check --epochs / --max-steps / --budget)');
  const stop: StopRecord = {
    reason,
    step: recipe.steps,
    seconds: (Date.now() - o.startedAt) / 1000,
    budgetSeconds: o.budgetSeconds,
    maxSteps: o.maxSteps,
    patience: o.patience,
    bestEpoch: best.epoch,
    bestStep: best.step,
    selection: recipe.selection.metric,
    bestValidation: best[recipe.selection.metric],
  };
  writeStop(o.run, stop);
  if (reason === 'budget' || reason === 'max-steps')
    o.log(`${recipe.name}: stopped by ${reason === 'budget' ? `the ${o.budgetSeconds} s budget` : `--max-steps ${o.maxSteps}`} at step ${recipe.steps}; the bundle holds the best validated step (${best.step}); --resume continues`);
  if (reason === 'patience') o.log(`${recipe.name}: stopping early, no better validation ${recipe.selection.metric} for ${o.patience} validations`);
  return { history, best, stop };
}
