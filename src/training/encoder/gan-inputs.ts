import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { generateMeis, type MeiResult } from './meis.js';
import { trainEncoder, type TrainEncoderOptions } from './train-encoder.js';

/**
 * What the GAN's MEI readin needs before it trains, staged so that a rerun picks up where it stopped:
 * an encoder of the session, then MEIs of the chosen neurons through it. bench:quality and
 * `cortexcast experiment` both stage it this way.
 */

/**
 * MEI gradient-ascent steps for the GAN's readin, not the report's 1,000: the MEI/RF correlation
 * was already 0.77 at 100 on the default preset, and 1,000 steps for 512 neurons take an hour on 2 cores.
 */
export const GAN_MEI_STEPS = 100;

/** The encoder's run folder holds stop.json once training finished (for any reason: epochs, budget, patience). */
export const encoderFinished = (encoder: string): boolean => existsSync(join(encoder, 'run', 'stop.json'));

/**
 * Train the encoder of these sessions into `o.out`, unless a finished one is there; an interrupted
 * one resumes from its checkpoint.
 */
export async function encoderStage(o: Omit<TrainEncoderOptions, 'resume' | 'run'>): Promise<void> {
  if (encoderFinished(o.out)) return;
  await trainEncoder({ ...o, resume: true });
}

/** MEIs of `neurons` (encoder output rows; all when absent) into `out`; finished chunks of an interrupted run are kept. */
export async function meiStage(o: { encoder: string; out: string; neurons?: number[]; steps?: number; threads?: number; quiet?: boolean; log?: (s: string) => void }): Promise<MeiResult> {
  return generateMeis({ encoder: o.encoder, out: o.out, steps: o.steps ?? GAN_MEI_STEPS, neurons: o.neurons, threads: o.threads, quiet: o.quiet, log: o.log });
}
