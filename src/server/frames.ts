import { ccError } from '../common/errors.js';
import type { DecoderBundle } from '../models/bundle.js';

export interface Stimulus {
  width: number;
  height: number;
  pixels: Uint8Array;
}

/** A decoded frame as it goes out to subscribers. */
export interface DecodedFrame {
  streamId: string;
  model: string;
  /** Exact uint64 sequence as a decimal string. */
  sequence: string;
  imageId?: number;
  stimulus?: Stimulus;
  acquiredMs?: number;
  /** acquiredMs is within a minute behind / a second ahead of the server clock (else it is not used as latency). */
  acquiredPlausible: boolean;
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
  if (bytes.byteLength % 4 !== 0) throw ccError('CC_ERR_RESPONSE_BYTES', bytes.byteLength, model, neurons, neurons * 4);
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
    throw ccError('CC_ERR_STIMULUS', bytes.byteLength, width, height);
  return { width, height, pixels: new Uint8Array(bytes) };
}

/** Model output (z-scored) -> grey levels, with the bundle's pixel mean and std. */
export function toGrey(values: Float32Array, b: DecoderBundle, out = new Uint8Array(values.length)): Uint8Array {
  const { pixelMean, pixelStd } = b.manifest.output;
  for (let i = 0; i < values.length; i++) out[i] = Math.max(0, Math.min(255, Math.round(values[i] * pixelStd + pixelMean)));
  return out;
}
