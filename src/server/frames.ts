import { ccError } from '../common/errors.js';
import type { DecoderBundle } from '../models/bundle.js';

/** An accepted frame on its way to a worker. */
export interface PendingFrame {
  streamId: string;
  model: string;
  sequence: number;
  /** Rig clock, epoch ms (undefined when the rig does not stamp frames). */
  acquiredMs?: number;
  /** Server clock, epoch ms. */
  ingestedMs: number;
  imageId?: number;
  stimulus?: Stimulus;
  /** Std-scaled decoder input. */
  input: Float32Array;
  /** Final outcome of this frame, for the stream's acknowledgements. */
  settle: (outcome: FrameOutcome) => void;
}

export type FrameOutcome =
  | { status: 'DECODED'; decodeUs: number; provider: string }
  | { status: 'DROPPED'; reason: string }
  | { status: 'REJECTED'; reason: string };

export interface Stimulus {
  width: number;
  height: number;
  pixels: Uint8Array;
}

/** A decoded frame as it goes out to subscribers. */
export interface DecodedFrame {
  streamId: string;
  model: string;
  sequence: number;
  imageId?: number;
  stimulus?: Stimulus;
  acquiredMs?: number;
  ingestedMs: number;
  decodeStartMs: number;
  decodeEndMs: number;
  provider: string;
  width: number;
  height: number;
  /** Grey levels 0..255 (model output de-normalised with the bundle's pixel statistics). */
  pixels: Uint8Array;
  /** The model's raw output (z-scored pixels). */
  values: Float32Array;
}

export const now = (): number => performance.timeOrigin + performance.now();

/** Raw little-endian float32 bytes -> responses, checked for length and finiteness. */
export function decodeResponses(bytes: Uint8Array, model: string, neurons: number): Float32Array {
  if (bytes.byteLength % 4 !== 0) throw ccError('CC_ERR_NEURON_COUNT', `${(bytes.byteLength / 4).toFixed(2)} (not a whole number of float32 values:)`, model, neurons);
  const n = bytes.byteLength / 4;
  if (n !== neurons) throw ccError('CC_ERR_NEURON_COUNT', n, model, neurons);
  // Copy into an aligned buffer: gRPC hands out slices of larger buffers at any offset.
  const out = new Float32Array(n);
  new Uint8Array(out.buffer).set(bytes);
  let bad = 0;
  let first = -1;
  for (let i = 0; i < n; i++)
    if (!Number.isFinite(out[i])) {
      bad++;
      if (first < 0) first = i;
    }
  if (bad) throw ccError('CC_ERR_NOT_FINITE', bad, first);
  return out;
}

/** The optional stimulus of a frame, checked: sizes match the bytes and stay within 256x256. */
export function decodeStimulus(bytes: Uint8Array, width: number, height: number): Stimulus | undefined {
  if (!bytes.byteLength) return undefined;
  if (width < 1 || height < 1 || width > 256 || height > 256 || width * height !== bytes.byteLength)
    throw new Error(`stimulus is ${bytes.byteLength} bytes for ${width}x${height} (at most 256x256, one byte per pixel)`);
  return { width, height, pixels: new Uint8Array(bytes) };
}

/** Model output (z-scored) -> grey levels, with the bundle's pixel mean and std. */
export function toGrey(values: Float32Array, b: DecoderBundle, out = new Uint8Array(values.length)): Uint8Array {
  const { pixelMean, pixelStd } = b.manifest.output;
  for (let i = 0; i < values.length; i++) out[i] = Math.max(0, Math.min(255, Math.round(values[i] * pixelStd + pixelMean)));
  return out;
}
