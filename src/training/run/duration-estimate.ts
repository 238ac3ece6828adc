/**
 * What a training run says about its own length once its step time is known: on a CPU the report's
 * 200 epochs are hours, and a run with no --budget, --max-steps or patience would otherwise give no
 * sign of it until the progress bars had been watched for a while.
 */

/** Steps timed before the estimate: the first step (graph compilation, allocation) is left out. */
export const STEPS_BEFORE_ESTIMATE = 5;

export interface EstimateInput {
  name: string;
  epochs: number;
  /** Steps the run has taken in all (a resumed run counts its earlier ones). */
  stepsDone: number;
  /** Steps the epochs hold in all (epochs x steps per epoch). */
  stepsTotal: number;
  /** Wall-clock seconds per step, measured. */
  secondsPerStep: number;
  /** Seconds of the invocation spent so far (setup included: the budget counts it). */
  elapsedSeconds: number;
  maxSteps?: number;
  budgetSeconds?: number;
  patience?: number;
}

/** '45 s', '12 min', '3.4 h'. */
export function formatSeconds(s: number): string {
  if (s < 90) return `${Math.round(s)} s`;
  if (s < 90 * 60) return `${Math.round(s / 60)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}

/** The line the run prints: how long its steps would take, and what ends it sooner (or how to make something). */
export function durationEstimate(e: EstimateInput): string {
  const stepsLeft = Math.max(0, (e.maxSteps !== undefined ? Math.min(e.maxSteps, e.stepsTotal) : e.stepsTotal) - e.stepsDone);
  const stepsSeconds = stepsLeft * e.secondsPerStep;
  const budgetLeft = e.budgetSeconds !== undefined ? Math.max(0, e.budgetSeconds - e.elapsedSeconds) : undefined;
  const head = `${e.name}: ${e.secondsPerStep < 1 ? `${Math.round(e.secondsPerStep * 1000)} ms` : `${e.secondsPerStep.toFixed(1)} s`} a step; ${stepsLeft} more step${stepsLeft === 1 ? '' : 's'} (${e.maxSteps !== undefined && e.maxSteps < e.stepsTotal ? `--max-steps ${e.maxSteps}` : `${e.epochs} epochs`}) take about ${formatSeconds(stepsSeconds)} plus validation`;
  if (budgetLeft !== undefined && budgetLeft < stepsSeconds) return `${head}; the --budget ends the run in ${formatSeconds(budgetLeft)}`;
  const patience = e.patience !== undefined ? `, sooner if patience (${e.patience} validations without a better score) stops it` : '';
  if (e.maxSteps !== undefined || budgetLeft !== undefined) return `${head}${patience}`;
  const bound = '--budget (e.g. --budget 2h) or --max-steps bound it, keeping the best validated bundle';
  return e.patience !== undefined ? `${head}${patience}; ${bound}` : `${head}. Nothing stops it sooner: ${bound}`;
}
