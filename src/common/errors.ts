/**
 * One catalogue of the errors users see, each with a stable code (grep-able in logs and docs) and
 * one message template. The README's "Errors" table lists the same codes; a test keeps them in step.
 */
export const ERRORS = {
  // data
  CC_ERR_NPY_FORMAT: 'not a valid .npy file: %s',
  CC_ERR_NPY_TRUNCATED: '%s is truncated: header promises %s bytes of data, file holds %s',
  CC_ERR_NPY_DTYPE: '%s has dtype %s, which cortexcast does not read (supported: %s)',
  CC_ERR_DATASET_MISSING: 'dataset %s: %s',
  CC_ERR_DATASET_SHAPE: 'dataset %s: %s',
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
  CC_ERR_CONFIG: 'invalid configuration: %s',
  CC_ERR_OPTION: 'invalid option: %s',
  CC_ERR_MEIS: 'MEI folder %s: %s',
  CC_ERR_CHECKPOINT: 'checkpoint %s: %s',
  CC_ERR_PROVIDER: 'no execution provider could load the model (%s)',
  CC_ERR_GRAPH: 'model graph: %s',
  // training
  CC_ERR_TRAINING_DIVERGED: '%s training diverged at step %s (loss %s); lower the learning rate or check the data',
  CC_ERR_EXPERIMENT: 'experiment %s: %s',
  CC_ERR_WRONG_KIND: 'bundle %s is a %s bundle; %s',
  CC_ERR_QUANTIZE: 'quantize %s: %s',
  CC_ERR_AUTOENCODER: 'autoencoder %s: %s',
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
