import * as grpc from '@grpc/grpc-js';
import fc from 'fast-check';
import { encode, metadataArb, metadataOf, mutate, mutationArb, pb, rawGrpc, type MetadataInput, type Mutation } from './wire.js';
import { b64, DEADLINE_MS, unb64, type FuzzTarget, type Outcome, type Surface } from './types.js';

/**
 * The unary methods of cortexcast.v1.Decoder and grpc.health.v1 (and paths no service has), each with
 * a structured request (neuron count, non-finite values, model names) or raw bytes, both mutable.
 * Oracle: every call is answered with a status before its deadline.
 */
export interface UnaryInput {
  metadata: MetadataInput;
  method: 'Decode' | 'GetModel' | 'ListModels' | 'ReloadModels' | 'HealthCheck' | 'Unknown';
  model: 'ok' | 'unknown' | string;
  countDelta: number;
  nonFinite: number[];
  raw: string | null;
  mutation: Mutation;
}

const PATHS: Record<UnaryInput['method'], string> = {
  Decode: '/cortexcast.v1.Decoder/Decode',
  GetModel: '/cortexcast.v1.Decoder/GetModel',
  ListModels: '/cortexcast.v1.Decoder/ListModels',
  ReloadModels: '/cortexcast.v1.Decoder/ReloadModels',
  HealthCheck: '/grpc.health.v1.Health/Check',
  Unknown: '/cortexcast.v1.Decoder/NoSuchMethod',
};

export const unaryArb = (t: FuzzTarget): fc.Arbitrary<UnaryInput> =>
  fc.record({
    metadata: metadataArb,
    // ReloadModels reloads every bundle from disk: rare, so the fuzzer does not spend its time there.
    method: fc.oneof({ weight: 8, arbitrary: fc.constant('Decode' as const) }, { weight: 3, arbitrary: fc.constantFrom('GetModel' as const, 'ListModels' as const, 'HealthCheck' as const, 'Unknown' as const) }, { weight: 1, arbitrary: fc.constant('ReloadModels' as const) }),
    model: fc.oneof({ weight: 6, arbitrary: fc.constant('ok') }, { weight: 1, arbitrary: fc.constant('unknown') }, { weight: 1, arbitrary: fc.string({ maxLength: 80 }) }),
    countDelta: fc.oneof({ weight: 6, arbitrary: fc.constant(0) }, { weight: 2, arbitrary: fc.integer({ min: -t.neurons, max: 64 }) }),
    nonFinite: fc.oneof({ weight: 6, arbitrary: fc.constant<number[]>([]) }, { weight: 1, arbitrary: fc.array(fc.nat(t.neurons), { minLength: 1, maxLength: 3 }) }),
    raw: fc.oneof({ weight: 9, arbitrary: fc.constant(null) }, { weight: 1, arbitrary: fc.uint8Array({ maxLength: 128 }).map(b64) }),
    mutation: mutationArb,
  });

export function unaryBody(i: UnaryInput, t: FuzzTarget): Buffer {
  if (i.raw !== null) return mutate(unb64(i.raw), i.mutation);
  const model = i.model === 'ok' ? t.model : i.model === 'unknown' ? 'no-such-model' : i.model;
  if (i.method === 'Decode') {
    const a = Float32Array.from({ length: Math.max(0, t.neurons + i.countDelta) }, (_, k) => (k % 11) / 5);
    for (const k of i.nonFinite) if (k < a.length) a[k] = NaN;
    return mutate(encode(pb.DecodeRequest, { model, responses: Buffer.from(a.buffer) }), i.mutation);
  }
  if (i.method === 'GetModel') return mutate(encode(pb.GetModelRequest, { name: model }), i.mutation);
  if (i.method === 'HealthCheck') return mutate(Buffer.concat([Buffer.from([0x0a, Math.min(model.length, 127)]), Buffer.from(model.slice(0, 127), 'latin1')]), i.mutation);
  return mutate(Buffer.alloc(0), i.mutation);
}

export async function runUnary(i: UnaryInput, t: FuzzTarget): Promise<Outcome> {
  // ReloadModels loads the bundle again: give it the deadline twice over on a loaded machine.
  const ms = i.method === 'ReloadModels' ? 2 * DEADLINE_MS : DEADLINE_MS;
  const r = await rawGrpc(t.grpcPort).unary(PATHS[i.method], unaryBody(i, t), metadataOf(i.metadata, t.token), ms);
  if (r === 'timeout') return { hang: `${i.method}: no status within ${ms} ms` };
  return { note: `${i.method} ${grpc.status[r.code]}${r.code === grpc.status.INTERNAL || r.code === grpc.status.UNKNOWN ? `: ${r.details.slice(0, 60)}` : ''}` };
}

export const grpcUnary: Surface<UnaryInput> = {
  name: 'grpc-unary',
  what: 'Decode, GetModel, ListModels, ReloadModels, health Check, unknown methods: structured and raw requests, mutated bytes, metadata',
  arbitrary: unaryArb,
  run: runUnary,
};
