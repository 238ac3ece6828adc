/**
 * Continuous recordings: what a two-photon rig produces (traces at the imaging rate) and what was on
 * screen, before trials are cut out of it. NWB files are read into this shape, the simulator writes
 * it, the replay client streams it frame by frame and the server's response window undoes the stream
 * into trial-like responses again.
 */

/** One stimulus presentation, times in seconds on the recording's clock. */
export interface Presentation {
  start: number;
  stop: number;
  /** Index into `ContinuousRecording.templates`. */
  template: number;
  /** Tier named by the file (e.g. a `tier` column); absent when the file has none. */
  tier?: string;
}

/** A grey stimulus image, 0..255, row-major [height, width]. */
export interface StimulusTemplate {
  image: Float32Array;
  height: number;
  width: number;
  /** Stable id of the image (the template's index when the file has no ids). */
  imageId: number;
}

export interface ContinuousRecording {
  /** Frames x units, row-major: frame t's responses are traces[t*units .. (t+1)*units). */
  traces: Float32Array;
  frames: number;
  units: number;
  unitIds: number[];
  /** Seconds, one per imaging frame, non-decreasing. */
  frameTimes: Float64Array;
  /** Imaging rate in Hz (the file's rate, or 1 / median frame interval). */
  rate: number;
  /** In time order. */
  presentations: Presentation[];
  templates: StimulusTemplate[];
}

/**
 * Which imaging frames make one response. For a stimulus whose onset falls in imaging frame k, the
 * response is the mean of frames k+lag .. k+lag+length-1. Live, the server averages the newest
 * `lengthFrames` frames of a stream; that mean belongs to the stimulus shown `lagFrames +
 * lengthFrames - 1` frames earlier. A trial-level stream (one averaged response per frame) is
 * { lengthFrames: 1, lagFrames: 0 }.
 */
export interface ResponseWindow {
  lengthFrames: number;
  lagFrames: number;
}

export const TRIAL_LEVEL_WINDOW: ResponseWindow = Object.freeze({ lengthFrames: 1, lagFrames: 0 });
