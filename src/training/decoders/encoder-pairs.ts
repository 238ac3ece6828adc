import type ort from 'onnxruntime-node';
import { ccError } from '../../common/errors.js';
import { loadBundle } from '../../models/bundle.js';
import { createSession } from '../../models/ort.js';
import type { Rng } from '../../models/rng.js';
import { cropResize } from '../../datasets/image-ops.js';
import type { PreparedData } from '../../datasets/preprocess.js';
import { predictResponses } from '../encoder/train-encoder.js';

/**
 * Extra (responses, image) training pairs made by a trained encoder, the low-data trick of the
 * report's successor, MEIcoder: new images are made from train-tier
 * stimuli only (a random window of 60-100% of the frame, rescaled to the full frame, mirrored half
 * the time), the encoder predicts the population's mean response to each, and the noise is the
 * source trial's own residual (its recorded responses minus the encoder's prediction for its image),
 * so trial-to-trial variability, shared gain changes included, looks like the recording's.
 * Validation and test stimuli are never used.
 */
export class EncoderPairs {
  private constructor(
    private readonly session: ort.InferenceSession,
    private readonly data: PreparedData,
    /** [train count, neurons]: recorded minus predicted responses of each train trial. */
    private readonly residuals: Float32Array,
    readonly encoder: string,
  ) {}

  static async create(encoderDir: string, data: PreparedData, threads?: number): Promise<EncoderPairs> {
    const enc = loadBundle(encoderDir);
    if (enc.manifest.kind !== 'encoder') throw ccError('CC_ERR_WRONG_KIND', enc.dir, enc.manifest.kind, 'encoder pairs need an encoder bundle (cortexcast train encoder)');
    const { height, width } = enc.manifest.output;
    if (height !== data.height || width !== data.width) throw ccError('CC_ERR_OPTION', `encoder ${enc.dir} takes ${height}x${width} images, the decoder's are ${data.height}x${data.width}`);
    if (enc.unitIds.length !== data.neurons || enc.unitIds.some((u, i) => u !== data.unitIds[i]))
      throw ccError('CC_ERR_OPTION', `encoder ${enc.dir} predicts other neurons (${enc.unitIds.length} units) than the decoder's data (${data.neurons}): train it on the same session`);
    const { session } = await createSession(enc.model, { intraOpThreads: threads });
    const { train } = data;
    const pred = await predictResponses(session, train.images, train.count, height, width);
    const residuals = new Float32Array(train.responses.length);
    for (let i = 0; i < residuals.length; i++) residuals[i] = train.responses[i] - pred[i];
    return new EncoderPairs(session, data, residuals, enc.dir);
  }

  /**
   * Overwrite batch rows `slots` of (responses [B, neurons], images [B, H*W]) with pairs made from
   * train trials `rows` (one per slot).
   */
  async fill(rows: number[], slots: number[], rng: Rng, responses: Float32Array, images: Float32Array, imageOffset = 0): Promise<void> {
    const { height: H, width: W, neurons: n, train } = this.data;
    const P = H * W;
    const made = new Float32Array(rows.length * P);
    rows.forEach((row, i) => {
      const scale = rng.uniform(0.6, 1);
      const ch = H * scale;
      const cw = W * scale;
      cropResize(train.images.subarray(row * P, (row + 1) * P), H, W, { top: rng.uniform(0, H - ch), left: rng.uniform(0, W - cw), height: ch, width: cw, flip: rng.next() < 0.5 }, H, W, made.subarray(i * P, (i + 1) * P));
    });
    const pred = await predictResponses(this.session, made, rows.length, H, W);
    rows.forEach((row, i) => {
      const slot = slots[i];
      for (let k = 0; k < n; k++) responses[slot * n + k] = Math.max(0, pred[i * n + k] + this.residuals[row * n + k]);
      images.set(made.subarray(i * P, (i + 1) * P), imageOffset + slot * P);
    });
  }
}
