/**
 * One catalogue of the errors users see, each with a stable code (grep-able in logs and docs) and
 * one message template. docs/reference/errors.md is generated from this catalogue (`npm run docs`),
 * one section per `// subsystem` comment below; a test keeps the page in step.
 */
export const ERRORS = {
  // data
  CC_ERR_NPY_FORMAT: 'not a valid .npy file: %s',
  CC_ERR_NPY_TRUNCATED: '%s is truncated: header promises %s bytes of data, file holds %s',
  CC_ERR_NPY_DTYPE: '%s has dtype %s, which cortexcast does not read (supported: %s)',
  CC_ERR_DATASET_MISSING: 'dataset %s: %s',
  CC_ERR_DATASET_SHAPE: 'dataset %s: %s',
  CC_ERR_NWB_FORMAT: 'NWB file %s: %s',
  CC_ERR_NWB_MISSING: 'NWB file %s: %s is missing (expected %s)',
  CC_ERR_NWB_AMBIGUOUS: 'NWB file %s: %s; choose one with %s',
  CC_ERR_NWB_SHAPE: 'NWB file %s: %s',
  CC_ERR_NWB_INDEX: 'NWB file %s: %s',
  CC_ERR_NWB_TIMING: 'NWB file %s: %s has neither timestamps nor starting_time with a rate (expected %s)',
  // models and bundles
  CC_ERR_BUNDLE: 'bundle %s: %s',
  CC_ERR_UNKNOWN_MODEL: 'unknown model %s (available: %s)',
  // input frames
  CC_ERR_NEURON_COUNT: 'frame has %s neurons, model %s expects %s',
  CC_ERR_NOT_FINITE: 'frame has %s non-finite values (NaN or Inf), first at neuron %s',
  CC_ERR_RESPONSE_BYTES: 'responses are %s bytes, not a whole number of float32 values (model %s expects %s neurons = %s bytes)',
  CC_ERR_STREAM_ID: 'stream_id %s: %s',
  CC_ERR_STREAM_IN_USE: "stream_id '%s' belongs to another open call; one call owns a stream id until that call ends",
  CC_ERR_SEQUENCE: 'sequence %s: %s',
  CC_ERR_UNIT_IDS: "unit_ids differ from model %s's neuron order (%s units): %s",
  CC_ERR_STIMULUS: 'stimulus is %s bytes for %sx%s (at most 256x256, one byte per pixel)',
  CC_ERR_MALFORMED_FRAME: 'message is not a valid ResponseFrame (%s)',
  CC_ERR_INFER_REQUEST: 'Open Inference Protocol request: %s',
  CC_ERR_MESSAGE_TOO_LARGE: 'message of %s bytes is over %s (%s bytes)',
  // server access and reloads
  CC_ERR_ADMIN_TOKEN: '%s needs the admin token (%s)',
  CC_ERR_RELOAD_RATE: 'a reload ended %s ms ago; reloads are at least %s ms apart (limits.minReloadIntervalMs)',
  CC_ERR_WARMUP_TIMEOUT: 'inference worker of model %s did not load and warm up within %s ms (limits.warmupTimeoutMs); it was terminated',
  CC_ERR_ORIGIN: 'origin %s may not open the WebSocket; add it to auth.allowedOrigins (--allowed-origin) to allow it',
  CC_ERR_HOST: 'Host %s is not a name of this server; add it to auth.allowedHosts (--allowed-host) to allow it',
  // configuration and options
  CC_ERR_CONFIG: 'invalid configuration: %s',
  CC_ERR_OPTION: 'invalid option: %s',
  // training inputs
  CC_ERR_MEIS: 'MEI folder %s: %s',
  CC_ERR_CHECKPOINT: 'checkpoint %s: %s',
  // model runtime
  CC_ERR_PROVIDER: 'no execution provider could load the model (%s)',
  CC_ERR_GRAPH: 'model graph: %s',
  // training
  CC_ERR_TRAINING_DIVERGED: '%s training diverged at step %s (loss %s); lower the learning rate or check the data',
  CC_ERR_EXPERIMENT: 'experiment %s: %s',
  CC_ERR_WRONG_KIND: 'bundle %s is a %s bundle; %s',
  CC_ERR_QUANTIZE: 'quantize %s: %s',
  CC_ERR_AUTOENCODER: 'autoencoder %s: %s',
  CC_ERR_CALIBRATION: 'calibration: %s',
} as const;

export type ErrorCode = keyof typeof ERRORS;

export class CortexcastError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
  ) {
    super(message);
    this.name = 'CortexcastError';
  }
}

/**
 * A client-chosen name inside a message, quoted and cut to `max` characters: error messages travel
 * in gRPC trailers and logs, where an echoed 100 kB name would stall the connection or flood the log.
 */
export const quoted = (s: string, max = 64): string => (s.length > max ? `'${s.slice(0, max)}...' (${s.length} characters)` : `'${s}'`);

/** Build the catalogued error `code`, filling its %s slots in order. */
export function ccError(code: ErrorCode, ...args: (string | number)[]): CortexcastError {
  let i = 0;
  const message = ERRORS[code].replace(/%s/g, () => String(args[i++] ?? ''));
  return new CortexcastError(code, `${code}: ${message}`);
}
