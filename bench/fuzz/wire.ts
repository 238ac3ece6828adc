import * as grpc from '@grpc/grpc-js';
import protobuf from 'protobufjs';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import { b64, unb64 } from './types.js';

/**
 * What the gRPC surfaces share on the wire: the protobuf types (encoded with protobufjs so a
 * structured input becomes exactly the bytes we mean), byte-level mutations of an encoding, and a
 * gRPC client that sends those bytes untouched (identity serializers).
 */
const root = new protobuf.Root();
root.loadSync([fileURLToPath(new URL('../../proto/cortexcast/v1/decoder.proto', import.meta.url)), fileURLToPath(new URL('../../proto/inference/grpc_predict_v2.proto', import.meta.url))], { keepCase: true });
export const pb = {
  ResponseFrame: root.lookupType('cortexcast.v1.ResponseFrame'),
  FrameAck: root.lookupType('cortexcast.v1.FrameAck'),
  DecodeRequest: root.lookupType('cortexcast.v1.DecodeRequest'),
  GetModelRequest: root.lookupType('cortexcast.v1.GetModelRequest'),
  ModelInferRequest: root.lookupType('inference.ModelInferRequest'),
  ModelMetadataRequest: root.lookupType('inference.ModelMetadataRequest'),
  ModelReadyRequest: root.lookupType('inference.ModelReadyRequest'),
};

export const encode = (t: protobuf.Type, obj: Record<string, unknown>): Buffer => Buffer.from(t.encode(t.fromObject(obj)).finish());

/** How an encoded message reaches the wire: as is, with bytes overwritten, cut short, or with fields appended. */
export type Mutation = { kind: 'none' } | { kind: 'flip'; at: number[]; bytes: number[] } | { kind: 'truncate'; keep: number } | { kind: 'append'; b64: string };

export const mutationArb: fc.Arbitrary<Mutation> = fc.oneof(
  { weight: 6, arbitrary: fc.constant({ kind: 'none' as const }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('flip' as const), at: fc.array(fc.nat(4096), { minLength: 1, maxLength: 4 }), bytes: fc.array(fc.nat(255), { minLength: 1, maxLength: 4 }) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('truncate' as const), keep: fc.nat(4096) }) },
  // Unknown or repeated fields, wrong wire types, varints without an end: protobuf allows concatenation.
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('append' as const), b64: fc.uint8Array({ minLength: 1, maxLength: 24 }).map(b64) }) },
);

export function mutate(bytes: Buffer, m: Mutation): Buffer {
  if (m.kind === 'none') return bytes;
  if (m.kind === 'truncate') return bytes.subarray(0, bytes.length ? m.keep % (bytes.length + 1) : 0);
  if (m.kind === 'append') return Buffer.concat([bytes, unb64(m.b64)]);
  const out = Buffer.from(bytes);
  if (out.length) m.at.forEach((at, i) => (out[at % out.length] = m.bytes[i % m.bytes.length]));
  return out;
}

/** Metadata an input sends: the right token, a wrong one, none, or odd values, plus arbitrary pairs (two authorization values: h2-raw, grpc-js refuses them). */
export interface MetadataInput {
  auth: 'good' | 'wrong' | 'none' | 'no-scheme' | 'empty';
  extra: [string, string][];
}

const mdKey = fc.oneof(
  fc.constantFrom('authorization', 'grpc-timeout', 'grpc-encoding', 'content-type', 'te', 'user-agent', 'x-cortexcast-call', 'grpc-accept-encoding', 'x-bin', 'trace-bin', 'grpc-status'),
  fc.stringMatching(/^[a-z0-9_.-]{1,24}$/),
);
export const metadataArb: fc.Arbitrary<MetadataInput> = fc.record({
  auth: fc.oneof({ weight: 8, arbitrary: fc.constant('good' as const) }, { weight: 3, arbitrary: fc.constantFrom('wrong' as const, 'none' as const, 'no-scheme' as const, 'empty' as const) }),
  extra: fc.array(fc.tuple(mdKey, fc.string({ maxLength: 40 })), { maxLength: 3 }),
});

/** grpc-js refuses some keys and values on the client side; those pairs are left out (the raw HTTP/2 surface sends anything). */
export function metadataOf(m: MetadataInput, token: string): grpc.Metadata {
  const md = new grpc.Metadata();
  const add = (k: string, v: string): void => {
    // grpc-js's client refuses a second authorization value (the raw HTTP/2 surface sends one).
    if (k === 'authorization' && md.get(k).length) return;
    try {
      if (k.endsWith('-bin')) md.add(k, Buffer.from(v));
      else md.add(k, v);
    } catch {
      // not expressible through grpc-js
    }
  };
  if (m.auth === 'good') add('authorization', `Bearer ${token}`);
  if (m.auth === 'wrong') add('authorization', `Bearer ${token.slice(1)}x`);
  if (m.auth === 'no-scheme') add('authorization', token);
  if (m.auth === 'empty') add('authorization', '');
  for (const [k, v] of m.extra) add(k, v);
  return md;
}

const identity = (b: Buffer): Buffer => b;

/** One client per server port, reused (grpc-js reconnects after the server closes a connection). */
export class RawGrpc {
  readonly client: grpc.Client;
  constructor(port: number) {
    this.client = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure(), {
      'grpc.max_receive_message_length': 64 * 2 ** 20,
      'grpc.max_send_message_length': 64 * 2 ** 20,
    });
  }

  bidi(path: string, md: grpc.Metadata): grpc.ClientDuplexStream<Buffer, Buffer> {
    return this.client.makeBidiStreamRequest(path, identity, identity, md);
  }

  /** One unary call; resolves with its status (never rejects) or 'timeout' after ms. */
  unary(path: string, body: Buffer, md: grpc.Metadata, ms: number): Promise<{ code: grpc.status; details: string; reply?: Buffer } | 'timeout'> {
    return new Promise((resolve) => {
      let done = false;
      const call = this.client.makeUnaryRequest(path, identity, identity, body, md, (e, reply) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        resolve(e ? { code: e.code, details: e.details } : { code: grpc.status.OK, details: '', reply });
      });
      const timer = setTimeout(() => {
        if (done) return;
        done = true;
        call.cancel();
        resolve('timeout');
      }, ms);
    });
  }

  close(): void {
    this.client.close();
  }
}

const clients = new Map<number, RawGrpc>();
export const rawGrpc = (port: number): RawGrpc => {
  let c = clients.get(port);
  if (!c) clients.set(port, (c = new RawGrpc(port)));
  return c;
};
export function closeRawGrpc(): void {
  for (const c of clients.values()) c.close();
  clients.clear();
}
