import { ccError } from '../../common/errors.js';
import { applyResponseTransform, loadBundle, type Manifest } from '../../models/bundle.js';
import { writeTrainedBundle } from '../run/export.js';
import { DecoderRunner, type IterativeSpec } from '../../models/decoder-runner.js';
import { writeModel } from '../../models/onnx/index.js';
import { createSession } from '../../models/ort.js';
import { readRawSplit } from '../../datasets/preprocess.js';
import { SensoriumDataset } from '../../datasets/sensorium.js';
import { openDataset } from '../../datasets/dataset-source.js';
import { FidComputer } from '../eval/metrics/fid.js';
import { scoreImages } from '../eval/metrics/image-metrics.js';
import { formatSeconds } from '../run/duration-estimate.js';
import { blurRadiusFor, buildImageStep, MAX_BLUR_RADIUS, STEP_IMAGE, STEP_KERNEL, STEP_LR, STEP_NEXT, STEP_TARGET } from './image-optimisation.js';

/** The report's search space, and a smaller one that fits a CPU. */
export const INVENC_GRIDS = {
  paper: { steps: [300, 1000, 2000], lr: [100, 1000, 2000], blurSigma: [1, 1.5, 2, 2.5] },
  quick: { steps: [50, 150, 300], lr: [100, 1000, 2000], blurSigma: [1, 2] },
} as const;

export interface InvencGrid {
  steps: readonly number[];
  lr: readonly number[];
  blurSigma: readonly number[];
}

export interface TrainInvencOptions {
  encoder: string;
  /** Dataset for the search (default: the encoder's training dataset). */
  data?: string;
  out: string;
  grid?: InvencGrid;
  /** Validation images used in the search (all of them is slow on a CPU). */
  searchImages?: number;
  seed?: number;
  threads?: number;
  log?: (s: string) => void;
}

export interface SearchPoint {
  steps: number;
  lr: number;
  blurSigma: number;
  fid: number;
  ssim: number;
  mse: number;
  pixcorr: number;
}

/**
 * The inverted-encoder decoder: no weights of its own; it decodes by optimising an image through a
 * frozen encoder. "Training" is the report's search over steps, step size and gradient blur,
 * scored on validation images by FID (every step count of the grid is read off one run per (lr,
 * sigma)). The bundle holds the encoder's one-step gradient graph (kind `invenc`, iterative).
 */
const INVENC_DOC = 'cortexcast inverted-encoder step: (target responses, image) -> next image';

export async function trainInvenc(o: TrainInvencOptions): Promise<{ manifest: Manifest; search: SearchPoint[]; best: SearchPoint; seconds: number }> {
  const t0 = Date.now();
  const log = o.log ?? ((s: string) => process.stderr.write(s + '\n'));
  const enc = loadBundle(o.encoder);
  if (enc.manifest.kind !== 'encoder') throw ccError('CC_ERR_WRONG_KIND', enc.dir, enc.manifest.kind, 'train invenc needs an encoder bundle (cortexcast train encoder)');
  const grid = o.grid ?? INVENC_GRIDS.quick;
  const ds = openDataset(o.data ?? enc.manifest.training.dataset);
  if (ds.neurons !== enc.manifest.input.neurons) throw ccError('CC_ERR_NEURON_COUNT', ds.neurons, enc.manifest.name, enc.manifest.input.neurons);
  const { height: H, width: W } = enc.manifest.output;
  // The first validation trials, scaled as the encoder was trained (its own std scaling); the
  // metrics are invariant to the images' affine normalisation, so raw grey levels serve as targets.
  const split = readRawSplit(ds, 'validation', { average: false, imageSize: [H, W], limit: o.searchImages ?? 40 });
  const count = split.imageIds.length;
  if (!count) throw ccError('CC_ERR_DATASET_SHAPE', ds.dir, "tier 'validation' has no trials");
  const targets = split.images;
  const responses = applyResponseTransform(split.responses, enc.stdScale, enc.manifest.input.transform, split.responses);
  const fid = await FidComputer.create(64);
  const seed = o.seed ?? 1;
  const maxSteps = Math.max(...grid.steps);

  const radius = MAX_BLUR_RADIUS;
  const step = buildImageStep(enc.model, 'invert', { blurRadius: radius });
  const model = writeModel(step, { docString: INVENC_DOC });
  const { session } = await createSession(model, { intraOpThreads: o.threads });
  const search: SearchPoint[] = [];
  const manifestBase = { kind: 'invenc' as const, onnx: { file: 'model.onnx', inputName: STEP_TARGET, outputName: STEP_NEXT, opset: step.opset, sha256: '' }, input: enc.manifest.input, output: enc.manifest.output };
  const settings = grid.blurSigma.length * grid.lr.length;
  const searchStart = Date.now();
  for (const blurSigma of grid.blurSigma)
    for (const lr of grid.lr) {
      // The paper grid is hours on a CPU: say so once the first setting's time is known.
      if (search.length === grid.steps.length && settings > 1) {
        const each = (Date.now() - searchStart) / 1000;
        log(`invenc search: ${formatSeconds(each)} per (lr, sigma) setting; the ${settings - 1} others take about ${formatSeconds(each * (settings - 1))}`);
      }
      const iterative: IterativeSpec = { imageInput: STEP_IMAGE, lrInput: STEP_LR, kernelInput: STEP_KERNEL, steps: 1, lr, blurSigma, blurRadius: radius, seed };
      const runner = new DecoderRunner(session, { ...manifestBase, iterative });
      // Steps are cumulative: run to each grid count in turn, continuing from the previous image.
      let done = 0;
      let image: Float32Array | undefined;
      for (const steps of [...grid.steps].sort((a, b) => a - b)) {
        image = await continueRun(runner, responses, count, image, steps - done);
        done = steps;
        const s = scoreImages(targets, image, count, H, W);
        const f = await fid.fid(targets, image, count, H, W);
        search.push({ steps, lr, blurSigma, fid: f, ssim: s.ssim, mse: s.mse, pixcorr: s.pixcorr });
        log(`invenc search: steps ${steps} lr ${lr} sigma ${blurSigma}: FID ${f.toFixed(3)} SSIM ${s.ssim.toFixed(3)} PixCorr ${s.pixcorr.toFixed(3)}`);
      }
    }
  const finite = search.filter((p) => Number.isFinite(p.fid));
  if (!finite.length) throw ccError('CC_ERR_TRAINING_DIVERGED', 'invenc search', maxSteps, 'NaN');
  const best = finite.reduce((a, b) => (b.fid < a.fid ? b : a));
  log(`invenc: best by validation FID: steps ${best.steps}, lr ${best.lr}, blur sigma ${best.blurSigma} (FID ${best.fid.toFixed(3)}, SSIM ${best.ssim.toFixed(3)})`);
  const manifest = writeTrainedBundle(o.out, {
    name: `invenc-${enc.manifest.input.neurons}n`,
    kind: 'invenc',
    graph: step,
    docString: INVENC_DOC,
    inputName: STEP_TARGET,
    outputName: STEP_NEXT,
    unitIds: enc.unitIds,
    stdScale: enc.stdScale,
    responseScaling: enc.manifest.input.responseScaling,
    height: H,
    width: W,
    pixelMean: enc.manifest.output.pixelMean,
    pixelStd: enc.manifest.output.pixelStd,
    iterative: { imageInput: STEP_IMAGE, lrInput: STEP_LR, kernelInput: STEP_KERNEL, steps: best.steps, lr: best.lr, blurSigma: best.blurSigma, blurRadius: radius, seed },
    training: {
      dataset: ds.dir,
      config: { decoder: 'invenc', encoder: enc.dir, encoderSha256: enc.manifest.onnx.sha256, grid, searchImages: count, search, chosen: best, blurRadiusNeeded: blurRadiusFor(best.blurSigma) },
      seconds: (Date.now() - t0) / 1000,
    },
    metrics: { validation: { fid: best.fid, ssim: best.ssim, mse: best.mse, pixcorr: best.pixcorr } },
  });
  return { manifest, search, best, seconds: (Date.now() - t0) / 1000 };
}

/** Run `steps` more optimisation steps from `image` (or from the start image). */
async function continueRun(runner: DecoderRunner, responses: Float32Array, rows: number, image: Float32Array | undefined, steps: number): Promise<Float32Array> {
  if (!image) return runner.run(responses, rows, steps);
  return runner.runFrom(image, responses, rows, steps);
}
