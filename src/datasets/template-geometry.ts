import { resizeArea } from './image-ops.js';
import type { StimulusTemplate } from './recording.js';

/** The stimulus geometry of SENSORIUM 2022 sessions and of the report's decoders (16:9, before their 1/4 resize). */
export const STIMULUS_SHAPE: readonly [number, number] = [144, 256];

/**
 * A template of any size at the report's geometry: centre crop to the target aspect ratio (the
 * largest centred window of height:width = h:w, so nothing is stretched), then area resampling to
 * h x w (an exact block mean when shrinking by a whole factor; box sampling when enlarging). A
 * template already at h x w is returned as it is (not copied).
 */
export function fitTemplate(t: StimulusTemplate, h = STIMULUS_SHAPE[0], w = STIMULUS_SHAPE[1]): Float32Array {
  if (t.height === h && t.width === w) return t.image;
  let ch = t.height;
  let cw = t.width;
  if (t.width * h > t.height * w) cw = Math.max(1, Math.round((t.height * w) / h));
  else ch = Math.max(1, Math.round((t.width * h) / w));
  const top = Math.floor((t.height - ch) / 2);
  const left = Math.floor((t.width - cw) / 2);
  const crop = new Float32Array(ch * cw);
  for (let y = 0; y < ch; y++) crop.set(t.image.subarray((top + y) * t.width + left, (top + y) * t.width + left + cw), y * cw);
  return resizeArea(crop, ch, cw, h, w);
}
