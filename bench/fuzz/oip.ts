import * as grpc from '@grpc/grpc-js';
import fc from 'fast-check';
import { encode, metadataArb, metadataOf, mutate, mutationArb, pb, rawGrpc, type MetadataInput, type Mutation } from './wire.js';
import { DEADLINE_MS, type FuzzTarget, type Outcome, type Surface } from './types.js';

/**
 * The Open Inference Protocol (inference.GRPCInferenceService) on the gRPC port: ModelInfer with
 * shapes, datatypes, batch sizes, contents and raw contents chosen around what the server checks,
 * plus the metadata and readiness calls. Oracle: every call answered with a status in time.
 */
interface TensorInput {
  name: 'responses' | string;
  datatype: string;
  /** Dimensions; 'N' is the model's neuron count. */
  shape: (number | 'N')[];
  /** How the values travel, and how many rows' worth of them (relative to the shape). */
  contents: 'raw' | 'fp32' | 'both' | 'none' | 'int';
  rowsDelta: number;
  nonFinite: boolean;
}

export interface OipInput {
  metadata: MetadataInput;
  method: 'ModelInfer' | 'ModelMetadata' | 'ModelReady' | 'ServerLive' | 'ServerReady' | 'ServerMetadata';
  model: 'ok' | 'unknown' | string;
  version: string;
  inputs: TensorInput[];
  rawEntries: number;
  outputs: string[];
  parameters: [string, string][];
  mutation: Mutation;
}

const tensorArb = fc.record({
  name: fc.oneof({ weight: 8, arbitrary: fc.constant('responses') }, { weight: 1, arbitrary: fc.string({ maxLength: 20 }) }),
  datatype: fc.oneof({ weight: 8, arbitrary: fc.constant('FP32') }, { weight: 2, arbitrary: fc.constantFrom('FP16', 'FP64', 'INT64', 'UINT8', 'BYTES', 'BOOL', '', 'fp32') }, { weight: 1, arbitrary: fc.string({ maxLength: 40 }) }),
  shape: fc.oneof(
    { weight: 4, arbitrary: fc.constantFrom<(number | 'N')[]>(['N'], [1, 'N'], [2, 'N'], [8, 'N']) },
    { weight: 2, arbitrary: fc.tuple(fc.oneof(fc.integer({ min: -2, max: 300 }), fc.constantFrom(256, 257, 2 ** 31, 2 ** 53 - 1, -(2 ** 53) + 1)), fc.constant<'N'>('N')).map((s) => [...s]) },
    { weight: 1, arbitrary: fc.array(fc.oneof(fc.integer({ min: -1, max: 1000 }), fc.constant<'N'>('N')), { maxLength: 5 }) },
  ),
  contents: fc.oneof({ weight: 6, arbitrary: fc.constant('raw' as const) }, { weight: 3, arbitrary: fc.constant('fp32' as const) }, { weight: 1, arbitrary: fc.constantFrom('both' as const, 'none' as const, 'int' as const) }),
  rowsDelta: fc.oneof({ weight: 8, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: fc.integer({ min: -2, max: 2 }) }),
  nonFinite: fc.oneof({ weight: 6, arbitrary: fc.constant(false) }, { weight: 1, arbitrary: fc.constant(true) }),
});

export const oipArb = (): fc.Arbitrary<OipInput> =>
  fc.record({
    metadata: metadataArb,
    method: fc.oneof({ weight: 8, arbitrary: fc.constant('ModelInfer' as const) }, { weight: 2, arbitrary: fc.constantFrom('ModelMetadata' as const, 'ModelReady' as const, 'ServerLive' as const, 'ServerReady' as const, 'ServerMetadata' as const) }),
    model: fc.oneof({ weight: 8, arbitrary: fc.constant('ok') }, { weight: 1, arbitrary: fc.constant('unknown') }, { weight: 1, arbitrary: fc.string({ maxLength: 80 }) }),
    version: fc.oneof({ weight: 6, arbitrary: fc.constant('') }, { weight: 2, arbitrary: fc.constantFrom('1', '2', '0', '01', '-1') }, { weight: 1, arbitrary: fc.string({ maxLength: 20 }) }),
    inputs: fc.oneof({ weight: 8, arbitrary: fc.array(tensorArb, { minLength: 1, maxLength: 1 }) }, { weight: 1, arbitrary: fc.array(tensorArb, { maxLength: 3 }) }),
    rawEntries: fc.oneof({ weight: 8, arbitrary: fc.constant(1) }, { weight: 1, arbitrary: fc.nat(3) }),
    outputs: fc.oneof({ weight: 4, arbitrary: fc.constant<string[]>([]) }, { weight: 2, arbitrary: fc.subarray(['image', 'pixels']) }, { weight: 1, arbitrary: fc.array(fc.oneof(fc.constantFrom('image', 'pixels'), fc.string({ maxLength: 12 })), { maxLength: 4 }) }),
    parameters: fc.array(fc.tuple(fc.string({ maxLength: 12 }), fc.string({ maxLength: 12 })), { maxLength: 2 }),
    mutation: mutationArb,
  });

/** Every dimension resolved; element count capped so one input stays a few megabytes at most. */
function dims(shape: TensorInput['shape'], n: number): number[] {
  return shape.map((d) => (d === 'N' ? n : d));
}

function tensorValues(ti: TensorInput, n: number): Float32Array {
  const d = dims(ti.shape, n);
  const rows = d.length === 2 ? d[0] : 1;
  const count = Math.max(0, Math.min((rows + ti.rowsDelta) * n, 64 * 1024));
  const a = Float32Array.from({ length: count }, (_, i) => (i % 9) / 4);
  if (ti.nonFinite && count) a[count >> 1] = NaN;
  return a;
}

export function oipBody(i: OipInput, t: FuzzTarget): { path: string; body: Buffer } {
  const model = i.model === 'ok' ? t.model : i.model === 'unknown' ? 'no-such-model' : i.model;
  const path = `/inference.GRPCInferenceService/${i.method}`;
  if (i.method === 'ServerLive' || i.method === 'ServerReady' || i.method === 'ServerMetadata') return { path, body: mutate(Buffer.alloc(0), i.mutation) };
  if (i.method !== 'ModelInfer') return { path, body: mutate(encode(i.method === 'ModelReady' ? pb.ModelReadyRequest : pb.ModelMetadataRequest, { name: model, version: i.version }), i.mutation) };
  const values = i.inputs.map((ti) => tensorValues(ti, t.neurons));
  const raw: Buffer[] = [];
  const inputs = i.inputs.map((ti, k) => {
    const v = values[k];
    const withRaw = ti.contents === 'raw' || ti.contents === 'both';
    const typed = ti.contents === 'fp32' || ti.contents === 'both' ? { fp32_contents: Array.from(v) } : ti.contents === 'int' ? { int_contents: Array.from(v, (x) => Math.round(x)) } : undefined;
    if (withRaw) raw.push(Buffer.from(v.buffer));
    return { name: ti.name, datatype: ti.datatype, shape: dims(ti.shape, t.neurons).map(String), ...(typed ? { contents: typed } : {}) };
  });
  // rawEntries 1 means "one per input" (the valid layout); other values add or remove entries.
  while (raw.length && raw.length < i.rawEntries) raw.push(raw[0]);
  if (i.rawEntries === 0) raw.length = 0;
  const req = {
    model_name: model,
    model_version: i.version,
    id: 'fuzz',
    parameters: Object.fromEntries(i.parameters.map(([k, v]) => [k, { string_param: v }])),
    inputs,
    outputs: i.outputs.map((name) => ({ name })),
    raw_input_contents: raw,
  };
  return { path, body: mutate(encode(pb.ModelInferRequest, req), i.mutation) };
}

export async function runOip(i: OipInput, t: FuzzTarget): Promise<Outcome> {
  const { path, body } = oipBody(i, t);
  const r = await rawGrpc(t.grpcPort).unary(path, body, metadataOf(i.metadata, t.token), DEADLINE_MS);
  if (r === 'timeout') return { hang: `${i.method}: no status within ${DEADLINE_MS} ms (${body.length} bytes)` };
  return { note: `${i.method} ${grpc.status[r.code]}${r.code === grpc.status.INTERNAL || r.code === grpc.status.UNKNOWN ? `: ${r.details.slice(0, 60)}` : ''}` };
}

export const oip: Surface<OipInput> = {
  name: 'oip',
  what: 'Open Inference Protocol: ModelInfer shapes, datatypes, batch sizes, typed/raw contents, outputs, versions; metadata and readiness calls',
  arbitrary: () => oipArb(),
  run: runOip,
};
