/**
 * Learning-rate schedules as multipliers of each group's base rate. Constant and cosine depend on the
 * step; reduce-on-plateau is driven from TypeScript with the monitored metric after each validation.
 */
export interface LrSchedule {
  factor(step: number): number;
  /** Called with a validation metric; only plateau schedules react. */
  report?(metric: number): void;
  describe(): string;
}

export const constantLr = (): LrSchedule => ({ factor: () => 1, describe: () => 'constant' });

export function cosineLr(totalSteps: number, minFactor = 0, warmupSteps = 0): LrSchedule {
  return {
    factor: (step) => {
      if (step < warmupSteps) return (step + 1) / warmupSteps;
      const t = Math.min(1, (step - warmupSteps) / Math.max(1, totalSteps - warmupSteps));
      return minFactor + (1 - minFactor) * 0.5 * (1 + Math.cos(Math.PI * t));
    },
    describe: () => `cosine(${totalSteps}, min ${minFactor}, warmup ${warmupSteps})`,
  };
}

/** Multiply the rate by `decay` after `patience` reports without improvement (mode 'max': higher is better). */
export class ReduceOnPlateau implements LrSchedule {
  private best: number | undefined;
  private bad = 0;
  private scale = 1;

  constructor(
    private readonly opts: { mode: 'min' | 'max'; decay?: number; patience?: number; threshold?: number; minFactor?: number } = { mode: 'min' },
  ) {}

  factor(): number {
    return this.scale;
  }

  report(metric: number): void {
    const th = this.opts.threshold ?? 1e-4;
    const better = this.best === undefined || (this.opts.mode === 'max' ? metric > this.best * (1 + Math.sign(this.best) * th) : metric < this.best * (1 - Math.sign(this.best) * th));
    if (better) {
      this.best = metric;
      this.bad = 0;
      return;
    }
    if (++this.bad > (this.opts.patience ?? 10)) {
      this.scale = Math.max(this.opts.minFactor ?? 0, this.scale * (this.opts.decay ?? 0.1));
      this.bad = 0;
    }
  }

  /** What a checkpoint keeps, so a resumed run decays on the same plateaus. */
  state(): { best?: number; bad: number; scale: number } {
    return { best: this.best, bad: this.bad, scale: this.scale };
  }

  restore(s: { best?: number; bad: number; scale: number }): void {
    this.best = s.best;
    this.bad = s.bad;
    this.scale = s.scale;
  }

  describe(): string {
    return `reduce-on-plateau(${this.opts.mode}, x${this.opts.decay ?? 0.1} after ${this.opts.patience ?? 10})`;
  }
}
