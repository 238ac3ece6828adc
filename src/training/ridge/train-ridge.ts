import type { Manifest } from '../../models/bundle.js';
import { dataSides, writeTrainedBundle } from '../run/export.js';
import { DECODER_INPUT, DECODER_OUTPUT } from '../../models/architectures/ridge.js';
import { writeModel } from '../../models/onnx/index.js';
import { createSession, runOnce } from '../../models/ort.js';
import { tensor } from '../../models/onnx/index.js';
import { DEFAULT_PREPROCESS, prepareDataset, type PreprocessConfig } from '../../datasets/preprocess.js';
import { SensoriumDataset } from '../../datasets/sensorium.js';
import { openDataset } from '../../datasets/dataset-source.js';
import { scoreImages } from '../eval/metrics/image-metrics.js';
import { fitRidge } from './ridge.js';

export interface TrainRidgeOptions {
  data: string;
  out: string;
  preprocess?: PreprocessConfig;
  alphas?: number[];
  /** Use only the first n train trials (the experiments' data-scaling curve). */
  maxTrain?: number;
  /** Fit on these neurons only (dataset column indices): the bundle's unit ids list just them. */
  neurons?: readonly number[];
  quiet?: boolean;
  log?: (s: string) => void;
}

const RIDGE_DOC = 'cortexcast ridge decoder: std-scaled responses -> z-scored image';

/** Fit the ridge decoder on a dataset folder and write its bundle. */
export async function trainRidge(o: TrainRidgeOptions): Promise<{ manifest: Manifest; seconds: number; fitSeconds: number }> {
  const t0 = Date.now();
  const log = o.log ?? ((s: string) => process.stderr.write(s + '\n'));
  const ds = openDataset(o.data);
  const cfg = o.preprocess ?? DEFAULT_PREPROCESS;
  const data = prepareDataset(ds, cfg, { quiet: o.quiet, maxTrain: o.maxTrain, neurons: o.neurons });
  const fit = await fitRidge(data, { alphas: o.alphas, log });
  const model = writeModel(fit.graph, { docString: RIDGE_DOC });
  // Validation scores of the exported graph itself.
  const { session } = await createSession(model);
  const res = await runOnce(session, { [DECODER_INPUT]: tensor('float32', [data.validation.count, data.neurons], data.validation.responses) });
  const val = scoreImages(data.validation.images, res[DECODER_OUTPUT].data as Float32Array, data.validation.count, data.height, data.width);
  log(`ridge: chose alpha ${fit.alpha} (lambda ${fit.lambda.toPrecision(4)}), validation SSIM ${val.ssim.toFixed(3)} PixCorr ${val.pixcorr.toFixed(3)}`);
  const manifest = writeTrainedBundle(o.out, {
    name: `ridge-${data.neurons}n`,
    kind: 'ridge',
    graph: fit.graph,
    docString: RIDGE_DOC,
    inputName: DECODER_INPUT,
    outputName: DECODER_OUTPUT,
    ...dataSides(data),
    training: {
      dataset: ds.dir,
      config: { decoder: 'ridge', preprocess: cfg, alphas: fit.path.map((p) => p.alpha), chosenAlpha: fit.alpha, lambda: fit.lambda, path: fit.path, trainTrials: data.train.count },
      seconds: fit.seconds,
    },
    metrics: { validation: { ssim: val.ssim, ssiml: val.ssiml, mse: val.mse, pixcorr: val.pixcorr } },
  });
  return { manifest, seconds: (Date.now() - t0) / 1000, fitSeconds: fit.seconds };
}
