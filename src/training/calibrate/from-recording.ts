import { ccError } from '../../common/errors.js';
import { isNwbPath, loadNwbSupport, openDataset } from '../../datasets/dataset-source.js';
import { Calibrator, type CalibratorOptions, type RefitResult } from './calibrator.js';
import { ReloadClient } from './server-link.js';
import { resizeGrey } from './stimuli.js';

export interface FromRecordingOptions extends CalibratorOptions {
  /** A dataset folder (SENSORIUM layout) or an NWB file, read trial by trial in recording order. */
  from: string;
  tier: string;
  /** Trials per second of the recording's clock (what --every and --memory count in). */
  rate: number;
  everySeconds: number;
  /** Ask a server to reload after each bundle (gRPC address and tokens). */
  reload?: { grpc: string; token?: string };
}

/**
 * Calibration without a server's feed: the rig's own recording (a file), read in order as if it
 * streamed at `rate` trials per second - the same statistics, held-out choice, refits and bundles as
 * a live calibration, so a decoder can be calibrated from what a session recorded, or the first
 * minutes of it. Returns every refit.
 */
export async function calibrateFromRecording(o: FromRecordingOptions): Promise<RefitResult[]> {
  if (isNwbPath(o.from)) await loadNwbSupport();
  const ds = openDataset(o.from);
  const trials = ds.indices(o.tier);
  if (!trials.length) throw ccError('CC_ERR_CALIBRATION', `${o.from} has no ${o.tier} trials`);
  const cal = new Calibrator(o);
  await cal.warm();
  const reloader = o.reload ? new ReloadClient(o.reload.grpc, o.reload.token) : undefined;
  const [h, w] = ds.imageShape;
  const out: RefitResult[] = [];
  let nextRefit = o.everySeconds;
  const refit = async (): Promise<void> => {
    const r = await cal.refit();
    if (!r) return;
    out.push(r);
    if (reloader) await reloader.reload();
  };
  try {
    for (let k = 0; k < trials.length; k++) {
      const t = k / o.rate;
      if (t >= nextRefit) {
        await refit();
        nextRefit += o.everySeconds;
      }
      const trial = ds.trial(trials[k]);
      cal.add({ raw: trial.responses, image: resizeGrey({ pixels: trial.image, height: h, width: w }, o.height, o.width), t, imageId: trial.imageId, unitIds: ds.unitIds });
    }
    if (cal.pending > 0) await refit();
  } finally {
    reloader?.close();
  }
  return out;
}
