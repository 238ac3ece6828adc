import * as grpc from '@grpc/grpc-js';
import fc from 'fast-check';
import { encode, metadataArb, metadataOf, mutate, mutationArb, pb, rawGrpc, type MetadataInput, type Mutation } from './wire.js';
import { b64, DEADLINE_MS, quiescent, sleep, unb64, until, type FrameCounters, type FuzzTarget, type Outcome, type Surface } from './types.js';

/**
 * StreamFrames (cortexcast.v1.Decoder): one call per input, a few messages, each a ResponseFrame
 * whose fields are chosen around the edges the server checks (neuron count, finiteness, stream ids,
 * sequences, unit ids, stimulus sizes), then possibly mutated, cut or padded as bytes, or replaced by
 * raw or oversized bytes. Oracle: the call gets its status in time; every frame the server counted
 * as received has exactly one final ack, on the wire and in /metrics.
 */
interface FrameInput {
  streamId: string;
  model: 'ok' | 'unknown' | 'empty';
  /** 'next': one more than the last sequence this input used on the stream; else a decimal uint64 (may overflow). */
  sequence: 'next' | 'repeat' | string;
  acquiredAtUs: 'now' | string;
  /** Float count relative to the model's neuron count; values repeat a small pattern. */
  countDelta: number;
  /** Extra bytes after the floats (not a whole float when 1..3). */
  tailBytes: number;
  nonFinite: [number, 'nan' | 'inf' | '-inf'][];
  unitIds: 'none' | 'right' | 'shifted' | 'short' | number[];
  imageId: string;
  stimulus: { width: number; height: number; bytes: number } | null;
}

type Message = { kind: 'frame'; frame: FrameInput; mutation: Mutation } | { kind: 'raw'; b64: string } | { kind: 'oversized'; bytes: number; frame: FrameInput };

export interface StreamInput {
  metadata: MetadataInput;
  messages: Message[];
  /** half-close: end our side and wait; hold: send nothing more (the server's idle timer ends it); cancel: cancel after sending. */
  end: 'half-close' | 'hold' | 'cancel';
}

const uint64 = fc.oneof(
  fc.bigInt({ min: 0n, max: 20n }),
  fc.constantFrom(2n ** 32n - 1n, 2n ** 53n - 1n, 2n ** 53n + 1n, 2n ** 63n - 1n, 2n ** 63n, 2n ** 64n - 1n, 2n ** 64n),
  fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }),
).map(String);
const int64 = fc.oneof(fc.constantFrom('0', '-1', '9223372036854775807', '-9223372036854775808'), fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }).map(String));

export const streamIdArb = fc.oneof(
  { weight: 6, arbitrary: fc.constantFrom('rig-a', 'rig-b', 'rig-c') },
  { weight: 2, arbitrary: fc.constantFrom('', ' ', 'has space', 'x'.repeat(128), 'x'.repeat(129), 'é', '\u0000', '*', '../x') },
  { weight: 1, arbitrary: fc.string({ maxLength: 140 }) },
  { weight: 1, arbitrary: fc.string({ unit: 'binary', maxLength: 20 }) },
);

export const frameArb = (t: FuzzTarget): fc.Arbitrary<FrameInput> =>
  fc.record({
    streamId: streamIdArb,
    model: fc.oneof({ weight: 8, arbitrary: fc.constant('ok' as const) }, { weight: 1, arbitrary: fc.constantFrom('unknown' as const, 'empty' as const) }),
    sequence: fc.oneof({ weight: 8, arbitrary: fc.constant('next') }, { weight: 1, arbitrary: fc.constant('repeat') }, { weight: 2, arbitrary: uint64 }),
    acquiredAtUs: fc.oneof({ weight: 4, arbitrary: fc.constant('now') }, { weight: 1, arbitrary: int64 }),
    countDelta: fc.oneof({ weight: 8, arbitrary: fc.constant(0) }, { weight: 2, arbitrary: fc.integer({ min: -t.neurons, max: 64 }) }),
    tailBytes: fc.oneof({ weight: 9, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: fc.integer({ min: 1, max: 7 }) }),
    nonFinite: fc.oneof({ weight: 8, arbitrary: fc.constant<[number, 'nan' | 'inf' | '-inf'][]>([]) }, { weight: 1, arbitrary: fc.array(fc.tuple(fc.nat(t.neurons + 64), fc.constantFrom('nan' as const, 'inf' as const, '-inf' as const)), { minLength: 1, maxLength: 3 }) }),
    unitIds: fc.oneof(
      { weight: 8, arbitrary: fc.constant('none' as const) },
      { weight: 2, arbitrary: fc.constantFrom('right' as const, 'shifted' as const, 'short' as const) },
      { weight: 1, arbitrary: fc.array(fc.integer({ min: -5, max: 1_000_000 }), { maxLength: 8 }) },
    ),
    imageId: fc.oneof({ weight: 4, arbitrary: fc.constant('0') }, { weight: 1, arbitrary: int64 }),
    stimulus: fc.oneof(
      { weight: 6, arbitrary: fc.constant(null) },
      { weight: 2, arbitrary: fc.record({ width: fc.integer({ min: 0, max: 300 }), height: fc.integer({ min: 0, max: 300 }), bytes: fc.constant(-1) }) },
      { weight: 1, arbitrary: fc.record({ width: fc.oneof(fc.nat(300), fc.constant(2 ** 32 - 1)), height: fc.oneof(fc.nat(300), fc.constant(2 ** 32 - 1)), bytes: fc.nat(70_000) }) },
    ),
  });

const messageArb = (t: FuzzTarget): fc.Arbitrary<Message> =>
  fc.oneof(
    { weight: 12, arbitrary: fc.record({ kind: fc.constant('frame' as const), frame: frameArb(t), mutation: mutationArb }) },
    { weight: 1, arbitrary: fc.record({ kind: fc.constant('raw' as const), b64: fc.uint8Array({ maxLength: 256 }).map(b64) }) },
    // Over limits.maxMessageBytes (1 MiB: refused with one ack) and over the transport limit (2 MiB + 64 KiB: ends the call).
    { weight: 1, arbitrary: fc.record({ kind: fc.constant('oversized' as const), bytes: fc.constantFrom(2 ** 20 + 1, 2 ** 21 + 65 * 1024), frame: frameArb(t) }) },
  );

export const streamArb = (t: FuzzTarget): fc.Arbitrary<StreamInput> =>
  fc.record({
    metadata: metadataArb,
    messages: fc.array(messageArb(t), { minLength: 1, maxLength: 8 }),
    end: fc.oneof({ weight: 8, arbitrary: fc.constant('half-close' as const) }, { weight: 1, arbitrary: fc.constantFrom('hold' as const, 'cancel' as const) }),
  });

/** The floats a frame carries: a fixed pattern, with the chosen entries made non-finite. */
function responses(f: FrameInput, t: FuzzTarget): Buffer {
  const n = Math.max(0, t.neurons + f.countDelta);
  const a = Float32Array.from({ length: n }, (_, i) => (i % 13) / 7);
  for (const [i, v] of f.nonFinite) if (i < n) a[i] = v === 'nan' ? NaN : v === 'inf' ? Infinity : -Infinity;
  return Buffer.concat([Buffer.from(a.buffer), Buffer.alloc(f.tailBytes, 0x41)]);
}

/** The protobuf object of one frame; `last` carries the sequence last used per stream id within this input. */
export function frameObject(f: FrameInput, t: FuzzTarget, last: Map<string, bigint>, padTo = 0): Record<string, unknown> {
  const prev = last.get(f.streamId) ?? 0n;
  const seq = f.sequence === 'next' ? prev + 1n : f.sequence === 'repeat' ? prev : BigInt(f.sequence);
  last.set(f.streamId, seq);
  const ids = f.unitIds === 'right' ? t.unitIds : f.unitIds === 'shifted' ? t.unitIds.map((u, i) => (i === t.unitIds.length - 1 ? u + 1 : u)) : f.unitIds === 'short' ? t.unitIds.slice(1) : f.unitIds === 'none' ? [] : f.unitIds;
  const stimBytes = f.stimulus ? (f.stimulus.bytes >= 0 ? f.stimulus.bytes : f.stimulus.width * f.stimulus.height) : 0;
  const obj: Record<string, unknown> = {
    stream_id: f.streamId,
    model: f.model === 'ok' ? t.model : f.model === 'unknown' ? 'no-such-model' : '',
    // protobufjs writes the low 64 bits of a larger value; 2^64 becomes 0 on the wire, as a C++ client's overflow would.
    sequence: (seq & (2n ** 64n - 1n)).toString(),
    acquired_at_us: f.acquiredAtUs === 'now' ? String(Math.round((performance.timeOrigin + performance.now()) * 1000)) : f.acquiredAtUs,
    responses: padTo ? Buffer.alloc(padTo) : responses(f, t),
    unit_ids: ids.map(String),
    image_id: f.imageId,
    stimulus: Buffer.alloc(stimBytes, 0x80),
    stimulus_width: f.stimulus?.width ?? 0,
    stimulus_height: f.stimulus?.height ?? 0,
  };
  return obj;
}

export function messageBytes(m: Message, t: FuzzTarget, last: Map<string, bigint>): Buffer {
  if (m.kind === 'raw') return unb64(m.b64);
  if (m.kind === 'oversized') return encode(pb.ResponseFrame, frameObject(m.frame, t, last, m.bytes));
  return mutate(encode(pb.ResponseFrame, frameObject(m.frame, t, last)), m.mutation);
}

const FINAL = new Set(['DECODED', 'DROPPED', 'REJECTED']);
const unaccountedOnServer = (a: FrameCounters, b: FrameCounters): number => b.received - a.received - (b.decoded - a.decoded) - (b.dropped - a.dropped);

export async function runStream(input: StreamInput, t: FuzzTarget): Promise<Outcome> {
  const before = await quiescent(t);
  const last = new Map<string, bigint>();
  const call = rawGrpc(t.grpcPort).bidi('/cortexcast.v1.Decoder/StreamFrames', metadataOf(input.metadata, t.token));
  const acks: { sequence: string; status: string }[] = [];
  let status: grpc.StatusObject | undefined;
  const ended = new Promise<void>((resolve) => {
    call.on('data', (b: Buffer) => {
      try {
        const a = pb.FrameAck.toObject(pb.FrameAck.decode(b), { longs: String, enums: String }) as { sequence: string; status: string };
        acks.push(a);
      } catch {
        acks.push({ sequence: '?', status: 'UNDECODABLE' });
      }
    });
    call.on('status', (s: grpc.StatusObject) => {
      status = s;
      resolve();
    });
    call.on('error', () => undefined);
  });
  for (const m of input.messages) call.write(messageBytes(m, t, last));
  if (input.end === 'half-close') call.end();
  if (input.end === 'cancel') call.cancel();
  const deadline = DEADLINE_MS + (input.end === 'hold' ? 2000 : 0);
  const timer = new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), deadline).unref());
  const r = await Promise.race([ended.then(() => 'ended' as const), timer]);
  if (r === 'timeout') {
    call.cancel();
    return { hang: `StreamFrames (${input.end}, ${input.messages.length} messages): no status within ${deadline} ms; ${acks.length} acks so far` };
  }
  // grpc-js's cancel() right after a write may send no RST_STREAM at all (seen on the wire: HEADERS and
  // DATA, then nothing), so the server only learns of the end from its idle timer; whether the server
  // lets a reset call go at once is checked by h2-raw, which sends the RST_STREAM itself.
  if (input.end === 'cancel') await sleep(200);
  // Frames of a cancelled or reset call may settle inside the server after the client saw its end.
  let after = await quiescent(t);
  if (unaccountedOnServer(before, after) !== 0) await until(async () => unaccountedOnServer(before, (after = await t.counters())) === 0, 3000, 50);
  const onServer = unaccountedOnServer(before, after);
  const finals = acks.filter((a) => FINAL.has(a.status));
  const settledAcks = finals.filter((a) => a.status !== 'REJECTED').length;
  const settledOnServer = after.decoded - before.decoded + (after.dropped - before.dropped);
  const note = `status ${status ? grpc.status[status.code] : "?"}; ${finals.length} final acks for ${input.messages.length} messages` + (status && status.code === grpc.status.UNKNOWN ? ` (${status.details.slice(0, 120)})` : "");
  if (onServer !== 0) return { unaccounted: Math.abs(onServer), note: `${note}; server counted ${after.received - before.received} received, ${settledOnServer} decoded or dropped` };
  // A cancelled call cannot receive acks; any other call must carry one final ack per accepted frame.
  if (input.end !== 'cancel' && settledAcks !== settledOnServer) return { unaccounted: Math.abs(settledOnServer - settledAcks), note: `${note}; server settled ${settledOnServer} frames, the client got ${settledAcks} DECODED/DROPPED acks` };
  // After a clean half-close, every message (valid or not) has exactly one final ack.
  if (input.end === 'half-close' && status?.code === grpc.status.OK && finals.length !== input.messages.length) return { unaccounted: Math.abs(input.messages.length - finals.length), note };
  return { note };
}

export const grpcStream: Surface<StreamInput> = {
  name: 'grpc-stream',
  what: 'StreamFrames: mutated ResponseFrame fields and bytes, truncated, raw and oversized messages, metadata and tokens',
  arbitrary: streamArb,
  run: runStream,
};
