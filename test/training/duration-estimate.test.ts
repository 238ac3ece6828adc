import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { durationEstimate, formatSeconds, STEPS_BEFORE_ESTIMATE } from '../../src/training/run/duration-estimate.js';
import { runTraining, type Recipe } from '../../src/training/run/loop.js';

const base = { name: 'gan', epochs: 200, stepsDone: 5, stepsTotal: 200 * 281, secondsPerStep: 1.9, elapsedSeconds: 60 };

describe('the expected duration a run prints', () => {
  it('says how long unbounded epochs take and how to bound them', () => {
    const line = durationEstimate(base);
    expect(line).toBe(
      'gan: 1.9 s a step; 56195 more steps (200 epochs) take about 29.7 h plus validation. Nothing stops it sooner: --budget (e.g. --budget 2h) or --max-steps bound it, keeping the best validated bundle',
    );
  });

  it('names the bound that ends the run sooner', () => {
    expect(durationEstimate({ ...base, budgetSeconds: 1800 })).toBe('gan: 1.9 s a step; 56195 more steps (200 epochs) take about 29.7 h plus validation; the --budget ends the run in 29 min');
    expect(durationEstimate({ ...base, maxSteps: 305 })).toBe('gan: 1.9 s a step; 300 more steps (--max-steps 305) take about 10 min plus validation');
    expect(durationEstimate({ ...base, patience: 6, secondsPerStep: 0.05 })).toMatch(/^gan: 50 ms a step; 56195 more steps \(200 epochs\) take about 47 min plus validation, sooner if patience \(6 validations without a better score\) stops it; --budget \(e\.g\. --budget 2h\) or --max-steps bound it/);
  });

  it('formats durations for reading', () => {
    expect([formatSeconds(45), formatSeconds(600), formatSeconds(3 * 3600 + 1440)]).toEqual(['45 s', '10 min', '3.4 h']);
  });

  it('the training loop prints it once, after timing its first steps', async () => {
    let x = 0;
    let steps = 0;
    const recipe: Recipe = {
      name: 'scalar',
      trainCounts: [40],
      batch: 4,
      config: {},
      selection: { metric: 'error', mode: 'min' },
      curves: [{ key: 'error', label: 'error' }],
      get steps() {
        return steps;
      },
      step: async () => {
        await new Promise((r) => setTimeout(r, 20));
        x += 0.1 * (1 - x);
        steps++;
        return { loss: (1 - x) ** 2, ms: 20 };
      },
      validate: async () => ({ scores: { error: Math.abs(1 - x) } }),
      exportBest: async () => undefined,
      saveCheckpoint: (dir) => writeFileSync(join(dir, 'x.json'), JSON.stringify({ x, steps })),
      loadCheckpoint: (dir) => void ({ x, steps } = JSON.parse(readFileSync(join(dir, 'x.json'), 'utf8')) as { x: number; steps: number }),
    };
    const lines: string[] = [];
    await runTraining(recipe, { run: mkdtempSync(join(tmpdir(), 'cc-estimate-')), epochs: 2, shuffleSeed: () => 1, startedAt: Date.now(), quiet: true, log: (s) => lines.push(s) });
    const estimates = lines.filter((l) => l.includes(' a step; '));
    expect(estimates).toHaveLength(1);
    // 2 epochs x 10 steps, STEPS_BEFORE_ESTIMATE of them taken, each at least the 20 ms the step waits.
    const m = /^scalar: (\d+) ms a step; (\d+) more steps \(2 epochs\)/.exec(estimates[0]);
    expect(m).not.toBeNull();
    expect(Number(m![1])).toBeGreaterThanOrEqual(19);
    expect(Number(m![2])).toBe(20 - STEPS_BEFORE_ESTIMATE);
    expect(estimates[0]).toContain('--budget');
  });
});
