import { existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { runTraining, type Recipe, type RunOptions } from '../../src/training/run/loop.js';
import { configChanges } from '../../src/training/run/run-folder.js';

/**
 * The shared training loop with a small real recipe: it fits a scalar to a target by gradient steps,
 * records the rows it was given, and scores |x - target| as its validation metric, so every loop
 * behaviour (batches, cadence, selection, patience, budget, checkpoint and resume) is observable.
 */
function scalarRecipe(counts: number[], target: number, lr = 0.2): Recipe & { seen: number[][][]; exported: number[]; x: number } {
  let x = 0;
  let steps = 0;
  const r = {
    name: 'scalar',
    trainCounts: counts,
    batch: 4,
    config: { target },
    selection: { metric: 'error', mode: 'min' as const },
    curves: [{ key: 'error', label: 'error' }],
    seen: [] as number[][][],
    exported: [] as number[],
    get x() {
      return x;
    },
    get steps() {
      return steps;
    },
    step: async (rows: number[][]) => {
      r.seen.push(rows.map((a) => [...a]));
      x += lr * (target - x);
      steps++;
      return { loss: (target - x) ** 2, ms: 0 };
    },
    validate: async () => ({ scores: { error: Math.abs(target - x) } }),
    exportBest: async () => void r.exported.push(steps),
    saveCheckpoint: (dir: string) => writeFileSync(join(dir, 'scalar.json'), JSON.stringify({ x, steps })),
    loadCheckpoint: (dir: string) => {
      ({ x, steps } = JSON.parse(readFileSync(join(dir, 'scalar.json'), 'utf8')) as { x: number; steps: number });
    },
  };
  return r;
}

const opts = (run: string, o: Partial<RunOptions> = {}): RunOptions => ({ run, epochs: 3, shuffleSeed: (e) => 10 + e, startedAt: Date.now(), quiet: true, log: () => undefined, ...o });
const tmp = (): string => mkdtempSync(join(tmpdir(), 'cc-loop-'));

describe('the shared training loop', () => {
  it('each epoch visits every trial of the largest session once; smaller sessions wrap around', async () => {
    const r = scalarRecipe([8, 5], 1);
    await runTraining(r, opts(tmp(), { epochs: 1 }));
    expect(r.seen).toHaveLength(2);
    expect(r.seen.flatMap((s) => s[0]).sort((a, b) => a - b)).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    const second = r.seen.flatMap((s) => s[1]);
    expect(new Set(second).size).toBe(5);
    expect(second.every((i) => i < 5)).toBe(true);
  });

  it('validates on its cadence, exports each improvement and writes the run folder', async () => {
    const run = tmp();
    const r = scalarRecipe([16], 1);
    const res = await runTraining(r, opts(run, { epochs: 2, validateEvery: 2 }));
    expect(res.history.map((h) => h.step)).toEqual([2, 4, 6, 8]);
    expect(r.exported).toEqual([2, 4, 6, 8]);
    expect(res.best.step).toBe(8);
    for (const f of ['config.json', 'metrics.csv', 'metrics.json', 'curves.svg', 'stop.json', 'checkpoint/run.json']) expect(existsSync(join(run, f)), f).toBe(true);
    expect(readFileSync(join(run, 'metrics.csv'), 'utf8').split('\n')[0]).toBe('epoch,step,seconds,trainLoss,error');
    expect(JSON.parse(readFileSync(join(run, 'stop.json'), 'utf8'))).toMatchObject({ reason: 'epochs', step: 8, bestStep: 8, selection: 'error' });
  });

  it('patience stops a run whose validation metric stopped improving, keeping the best point', async () => {
    // lr 2 overshoots: x = 0, 2, -2, 6, ... the error grows after the first step.
    const r = scalarRecipe([40], 1, 2);
    const res = await runTraining(r, opts(tmp(), { epochs: 5, validateEvery: 1, patience: 2 }));
    expect(res.stop.reason).toBe('patience');
    expect(res.history).toHaveLength(3);
    expect(res.best.step).toBe(1);
    expect(r.exported).toEqual([1]);
  });

  it('max-steps and budget stop mid-epoch after a validation of the last step; resume continues the same run', async () => {
    const run = tmp();
    const first = scalarRecipe([40], 1);
    const a = await runTraining(first, opts(run, { epochs: 2, maxSteps: 3 }));
    expect(a.stop).toMatchObject({ reason: 'max-steps', step: 3, bestStep: 3 });
    const second = scalarRecipe([40], 1);
    const b = await runTraining(second, opts(run, { epochs: 3, resume: true }));
    expect(second.seen).toHaveLength(20); // epochs 2 and 3 of 10 steps; epoch 1 ended at the checkpoint
    expect(b.history[0].step).toBe(3);
    expect(b.history.map((h) => h.step)).toEqual([3, 13, 23]);
    // Resuming under other settings is refused, naming them; the run folder is left as it was.
    const other = scalarRecipe([40], 2);
    await expect(runTraining(other, opts(run, { epochs: 4, resume: true }))).rejects.toThrow(/CC_ERR_CHECKPOINT.*other settings than the run's \(target: 1 -> 2\)/);
    expect(JSON.parse(readFileSync(join(run, 'config.json'), 'utf8'))).toEqual({ target: 1 });
    const budget = scalarRecipe([40], 1);
    const c = await runTraining(budget, opts(tmp(), { budgetSeconds: 1e-6, startedAt: Date.now() - 1000 }));
    expect(c.stop).toMatchObject({ reason: 'budget', step: 1 });
  });

  it('a checkpoint is swapped in whole: a save killed before or between its renames resumes from the last complete one', async () => {
    const run = tmp();
    await runTraining(scalarRecipe([40], 1), opts(run, { epochs: 1, maxSteps: 3 }));
    const ckpt = join(run, 'checkpoint');
    // Killed while writing: a half-written `.partial` folder is ignored (and replaced by the next save).
    mkdirSync(`${ckpt}.partial`);
    writeFileSync(join(`${ckpt}.partial`, 'scalar.json'), '{"x": 99, "st');
    // Killed between the renames: only `.previous` holds the last complete checkpoint.
    renameSync(ckpt, `${ckpt}.previous`);
    const resumed = scalarRecipe([40], 1);
    const r = await runTraining(resumed, opts(run, { epochs: 2, maxSteps: 5, resume: true }));
    expect(r.history.map((h) => h.step)).toEqual([3, 5]);
    expect(resumed.seen).toHaveLength(2);
    expect(existsSync(`${ckpt}.partial`) || existsSync(`${ckpt}.previous`)).toBe(false);
    expect(JSON.parse(readFileSync(join(ckpt, 'scalar.json'), 'utf8'))).toMatchObject({ steps: 5 });
  });

  it('a diverged step stops the run with CC_ERR_TRAINING_DIVERGED naming the recipe and step', async () => {
    const r = scalarRecipe([8], Number.NaN);
    await expect(runTraining(r, opts(tmp()))).rejects.toThrow(/CC_ERR_TRAINING_DIVERGED.*scalar training diverged at step 1/);
  });

  it('a resume compares settings as settings: key order, the spelling of an existing path and the epoch count do not count as changes', () => {
    const dir = tmp();
    const recorded = { loss: 'mse', epochs: 3, architecture: { channels: 16, levels: 0 }, data: dir };
    expect(configChanges(recorded, { architecture: { levels: 0, channels: 16 }, epochs: 10, data: join(dir, '.'), loss: 'mse' })).toEqual([]);
    expect(configChanges(recorded, { loss: 'mae', epochs: 3, architecture: { channels: 16, levels: 0 }, data: dir })).toEqual(['loss: "mse" -> "mae"']);
    expect(configChanges({ loss: 'mse' }, { loss: 'mse', contrastDownsample: 4 })).toEqual(['contrastDownsample: absent -> 4']);
  });
});
