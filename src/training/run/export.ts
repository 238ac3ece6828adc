import ort from 'onnxruntime-node';
import { VERSION } from '../../common/version.js';
import { writeBundle, type Manifest, type WriteBundleInput } from '../../models/bundle.js';
import { writeModel, type Graph } from '../../models/onnx/index.js';
import type { PreparedData } from '../../datasets/preprocess.js';

/** The input and output sides of a bundle trained on `data`: unit ids, std scaling and pixel statistics. */
export function dataSides(data: PreparedData): Pick<WriteBundleInput, 'unitIds' | 'stdScale' | 'responseScaling' | 'height' | 'width' | 'pixelMean' | 'pixelStd' | 'responseWindow'> {
  return {
    unitIds: data.unitIds,
    stdScale: data.prep.responseScale,
    responseScaling: data.prep.config.responseScaling,
    height: data.height,
    width: data.width,
    pixelMean: data.prep.imageMean,
    pixelStd: data.prep.imageStd,
    ...(data.responseWindow ? { responseWindow: data.responseWindow } : {}),
  };
}

export type TrainedBundle = Omit<WriteBundleInput, 'model' | 'opset' | 'version' | 'onnxruntime'> & { graph: Graph; docString: string };

/**
 * The one place trained bundles are written: serialises the graph and stamps provenance (cortexcast
 * and ONNX Runtime versions; the node and host are added by writeBundle).
 */
export function writeTrainedBundle(dir: string, b: TrainedBundle): Manifest {
  const { graph, docString, ...rest } = b;
  return writeBundle(dir, { ...rest, model: writeModel(graph, { docString }), opset: graph.opset, version: VERSION, onnxruntime: ort.env.versions.node ?? 'unknown' });
}
