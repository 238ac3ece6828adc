import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { fileURLToPath } from 'node:url';
import { ccError, quoted } from '../common/errors.js';
import { VERSION } from '../common/version.js';
import type { ServerConfig } from './config.js';
import { decodeResponses, now, toGrey } from './frames.js';
import type { ServerMetrics } from './metrics.js';
import type { ModelRegistry, ServedModel } from './model-registry.js';
import type { DecodeOutcome, DecodeScheduler } from './scheduler.js';
import { dropStatus, guardUnary, status, unaryWait } from './unary.js';
import { guardDeserializers } from './wire-guard.js';
import { SERVING_TENSORS } from '../models/bundle.js';

export const V2_PROTO_PATH = fileURLToPath(new URL('../../proto/inference/grpc_predict_v2.proto', import.meta.url));

/** The served tensor names (the server applies the bundle's std scaling and transform to `responses`, as for StreamFrames). */
const V2_TENSORS = SERVING_TENSORS;
/** Rows one ModelInfer may carry. */
export const V2_MAX_ROWS = 256;
/** What a ModelInfer message holds besides its tensor bytes: protobuf framing, names, shape, id. */
export const V2_MESSAGE_HEADROOM = 64 * 1024;

/**
 * The largest ModelInfer request the served models need: max over models of
 * V2_MAX_ROWS x neurons x 4 bytes (a full FP32 batch) + V2_MESSAGE_HEADROOM, never under
 * limits.maxMessageBytes. Recomputed whenever the served models change (start, reload).
 */
export function v2RequestBytes(models: readonly Pick<ServedModel, 'neurons'>[], maxMessageBytes: number): number {
  return Math.max(maxMessageBytes, ...models.map((m) => V2_MAX_ROWS * m.neurons * 4 + V2_MESSAGE_HEADROOM));
}

/** The largest ModelInfer answer: a full batch's FP32 image and UINT8 pixels (5 bytes a pixel) + headroom. */
export function v2ResponseBytes(models: readonly Pick<ServedModel, 'width' | 'height'>[]): number {
  return Math.max(0, ...models.map((m) => V2_MAX_ROWS * m.width * m.height * 5 + V2_MESSAGE_HEADROOM));
}

/**
 * The service with every request checked against `maxMessageBytes()` as it is when the message
 * arrives (it follows the served models).
 */
export function loadV2Proto(maxMessageBytes: number | (() => number)): { pkg: protoLoader.PackageDefinition; service: grpc.ServiceDefinition } {
  const pkg = protoLoader.loadSync(V2_PROTO_PATH, { keepCase: true, longs: Number, enums: String, defaults: true, oneofs: true });
  const loaded = grpc.loadPackageDefinition(pkg) as unknown as { inference: { GRPCInferenceService: { service: grpc.ServiceDefinition } } };
  const plain = loaded.inference.GRPCInferenceService.service;
  const limit = typeof maxMessageBytes === 'number' ? () => maxMessageBytes : maxMessageBytes;
  let guarded = { bytes: limit(), service: guardDeserializers(plain, limit()) };
  const current = (): grpc.ServiceDefinition => {
    const bytes = limit();
    if (bytes !== guarded.bytes) guarded = { bytes, service: guardDeserializers(plain, bytes) };
    return guarded.service;
  };
  const service: Record<string, grpc.MethodDefinition<unknown, unknown>> = {};
  for (const [name, method] of Object.entries(plain)) service[name] = { ...method, requestDeserialize: (bytes: Buffer) => current()[name].requestDeserialize(bytes) };
  return { pkg, service: service as grpc.ServiceDefinition };
}

interface InferInput {
  name: string;
  datatype: string;
  shape: number[];
  contents: { fp32_contents: number[] } | null;
}

interface InferRequest {
  model_name: string;
  model_version?: string;
  id: string;
  inputs: InferInput[];
  outputs: { name: string }[];
  raw_input_contents: Buffer[];
}

export interface V2Deps {
  cfg: ServerConfig;
  registry: ModelRegistry;
  scheduler: DecodeScheduler;
  metrics: ServerMetrics;
  /** RUNNING: accepting work. */
  isAccepting: () => boolean;
  isLive: () => boolean;
  /** Taking work with every model's workers alive (what /healthz reports). */
  isReady: () => boolean;
  log: (level: 'info' | 'warn' | 'error', msg: string, fields?: Record<string, unknown>) => void;
}


/** Only version "1" exists (a bundle is one version); empty means "the server's choice". */
const versionOk = (v: string | undefined): boolean => v === undefined || v === '' || v === '1';

/**
 * inference.GRPCInferenceService on the cortexcast gRPC port: same auth, limits, scheduler and
 * metrics as cortexcast's own Decoder service. ModelInfer takes FP32 `responses` of shape [N] or
 * [B, N] (B <= 256), as raw_input_contents or typed fp32_contents, and answers `image` (FP32,
 * [B, 1, H, W]) and `pixels` (UINT8, same shape) as raw_output_contents.
 */
export function inferenceV2Service(d: V2Deps): grpc.UntypedServiceImplementation {
  const unary = { token: d.cfg.auth.token, metrics: d.metrics, log: d.log };
  const model = (name: string, version: string | undefined): ServedModel => {
    if (!versionOk(version)) throw ccError('CC_ERR_UNKNOWN_MODEL', `${quoted(name)} version ${quoted(version ?? '', 16)}`, 'version 1 of each model');
    return d.registry.get(name);
  };
  /** guardUnary (auth, message checks, errors) around a handler that reads the request. */
  const handler =
    <Req>(name: string, h: (req: Req, call: grpc.ServerUnaryCall<Req, unknown>, cb: grpc.sendUnaryData<unknown>) => void) =>
      guardUnary<Req, unknown>(unary, `inference.${name}`, (call, cb) => h(call.request, call, cb));
  const tensorMeta = (m: ServedModel) => ({
    inputs: [{ name: V2_TENSORS.input, datatype: 'FP32', shape: [-1, m.neurons] }],
    outputs: [
      { name: V2_TENSORS.image, datatype: 'FP32', shape: [-1, 1, m.height, m.width] },
      { name: V2_TENSORS.pixels, datatype: 'UINT8', shape: [-1, 1, m.height, m.width] },
    ],
  });

  return {
    ServerLive: handler('ServerLive', (_req, _call, cb) => cb(null, { live: d.isLive() })),
    ServerReady: handler('ServerReady', (_req, _call, cb) => cb(null, { ready: d.isReady() })),
    ModelReady: handler<{ name: string; version?: string }>('ModelReady', (req, _call, cb) => {
      const ready = versionOk(req.version) && d.registry.has(req.name) && d.registry.get(req.name).pool.alive > 0 && d.isAccepting();
      cb(null, { ready });
    }),
    ServerMetadata: handler('ServerMetadata', (_req, _call, cb) => cb(null, { name: 'cortexcast', version: VERSION, extensions: [] })),
    ModelMetadata: handler<{ name: string; version?: string }>('ModelMetadata', (req, _call, cb) => {
      const m = model(req.name, req.version);
      const man = m.bundle.manifest;
      cb(null, {
        name: m.name,
        versions: ['1'],
        platform: 'onnxruntime_onnx',
        ...tensorMeta(m),
        properties: { kind: man.kind, provider: m.provider, pixel_mean: String(man.output.pixelMean), pixel_std: String(man.output.pixelStd), response_scaling: man.input.responseScaling, transform: man.input.transform },
      });
    }),
    ModelInfer: handler<InferRequest>('ModelInfer', (req, call, cb) => {
      if (!d.isAccepting()) return cb(status(grpc.status.UNAVAILABLE, 'server is shutting down'));
      const m = model(req.model_name, req.model_version);
      const rows = inputRows(req, m);
      const wanted = req.outputs.length ? req.outputs.map((o) => o.name) : [V2_TENSORS.image, V2_TENSORS.pixels];
      for (const w of wanted) if (w !== V2_TENSORS.image && w !== V2_TENSORS.pixels) throw ccError('CC_ERR_INFER_REQUEST', `unknown output ${quoted(w)} (outputs: image, pixels)`);
      const { waitMs, cancelReason } = unaryWait(call, d.cfg.limits.maxDecodeWaitMs);
      // The whole request is one unit of work: admitted or refused whole, decoded in one run.
      const cancel = d.scheduler.submitUnary(
        {
          model: m.name,
          raw: rows.raw,
          rows: rows.count,
          caller: call.getPeer(),
          ingestedMs: now(),
          settle: (o: DecodeOutcome): void => {
            if (o.status !== 'DECODED') return cb(dropStatus(d.metrics, m.name, o));
            d.metrics.unaryDecodes.inc({ model: m.name, code: 'OK' });
            const shape = [rows.count, 1, o.served.height, o.served.width];
            const outputs = wanted.map((name) => ({ name, datatype: name === V2_TENSORS.image ? 'FP32' : 'UINT8', shape }));
            const image = o.values;
            const raw = wanted.map((name) => (name === V2_TENSORS.image ? Buffer.from(image.buffer, image.byteOffset, image.byteLength) : Buffer.from(toGrey(image, o.served.bundle))));
            cb(null, { model_name: m.name, model_version: '1', id: req.id, outputs, raw_output_contents: raw });
          },
        },
        waitMs,
      );
      call.on('cancelled', () => cancel(cancelReason()));
    }),
  };
}

/** The request's one FP32 input as validated raw responses, `count` rows of the model's neurons. */
function inputRows(req: InferRequest, m: ServedModel): { raw: Float32Array; count: number } {
  if (req.inputs.length !== 1) throw ccError('CC_ERR_INFER_REQUEST', `expected 1 input tensor '${V2_TENSORS.input}', got ${req.inputs.length}`);
  const input = req.inputs[0];
  if (input.name !== V2_TENSORS.input) throw ccError('CC_ERR_INFER_REQUEST', `input is named ${quoted(input.name)}; model ${m.name} takes '${V2_TENSORS.input}'`);
  if (input.datatype !== 'FP32') throw ccError('CC_ERR_INFER_REQUEST', `input datatype ${input.datatype.slice(0, 16)}; '${V2_TENSORS.input}' is FP32`);
  const shape = input.shape;
  const rows = shape.length === 1 ? 1 : shape.length === 2 ? shape[0] : -1;
  if (rows < 1 || shape[shape.length - 1] !== m.neurons || rows > V2_MAX_ROWS)
    throw ccError('CC_ERR_INFER_REQUEST', `input shape [${shape.join(',')}]; model ${m.name} takes [${m.neurons}] or [B, ${m.neurons}] with 1 <= B <= ${V2_MAX_ROWS}`);
  let bytes: Uint8Array;
  if (req.raw_input_contents.length) {
    if (input.contents && input.contents.fp32_contents.length) throw ccError('CC_ERR_INFER_REQUEST', 'both raw_input_contents and contents are set; use one');
    if (req.raw_input_contents.length !== 1) throw ccError('CC_ERR_INFER_REQUEST', `raw_input_contents has ${req.raw_input_contents.length} entries for 1 input`);
    bytes = req.raw_input_contents[0];
  } else {
    const values = input.contents?.fp32_contents ?? [];
    bytes = new Uint8Array(Float32Array.from(values).buffer);
  }
  const n = m.neurons;
  if (bytes.byteLength !== rows * n * 4) throw ccError('CC_ERR_INFER_REQUEST', `input holds ${bytes.byteLength} bytes; shape [${shape.join(',')}] FP32 needs ${rows * n * 4}`);
  const raw = new Float32Array(rows * n);
  for (let r = 0; r < rows; r++) raw.set(decodeResponses(bytes.subarray(r * n * 4, (r + 1) * n * 4), m.name, n), r * n);
  return { raw, count: rows };
}
