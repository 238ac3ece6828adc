/**
 * cortexcast client library: speaks only the public protocols (gRPC contract in proto/, WebSocket
 * msgpack frames, HTTP). Used by the replay client, the recorder, tests and benchmarks.
 */
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { Unpackr } from 'msgpackr';
import { fileURLToPath } from 'node:url';
import WebSocket from 'ws';
import { exactInteger } from '../../src/common/uint64.js';

export const PROTO_PATH = fileURLToPath(new URL('../../proto/cortexcast/v1/decoder.proto', import.meta.url));
export const V2_PROTO_PATH = fileURLToPath(new URL('../../proto/inference/grpc_predict_v2.proto', import.meta.url));

/**
 * uint64 sequence numbers: a number where that is exact (up to 2^53 - 1), else a BigInt, on the way
 * in and out, so a sequence is never rounded (proto3's uint64 carries all 64 bits).
 */
export type Sequence = number | bigint;

export interface FrameAck {
  sequence: Sequence;
  status: 'ACCEPTED' | 'DECODED' | 'DROPPED' | 'REJECTED';
  reason: string;
  decodeUs: number;
  provider: string;
}

export interface OutgoingFrame {
  streamId: string;
  model: string;
  /** 1 .. 2^64 - 1, strictly increasing per stream (the server rejects others). */
  sequence: Sequence;
  responses: Float32Array;
  /** Epoch microseconds at acquisition (defaults to now). */
  acquiredAtUs?: number;
  unitIds?: number[];
  imageId?: number;
  /** The stimulus shown, grey 0..255 row-major (viewers display and score against it). */
  stimulus?: { width: number; height: number; pixels: Uint8Array };
}

export interface ConnectOptions {
  token?: string;
  /** PEM of the CA that signed the server's certificate (TLS). */
  ca?: Buffer;
  channelOptions?: grpc.ChannelOptions;
}

export interface CallOptions {
  /** gRPC deadline, from now. */
  timeoutMs?: number;
  /** Cancels the call. */
  signal?: AbortSignal;
}

/** One unary call with the connection's metadata, an optional deadline and cancellation. */
function unaryCall<T>(client: DecoderClient, md: grpc.Metadata, method: string, req: unknown, o: CallOptions): Promise<T> {
  const opts: grpc.CallOptions = o.timeoutMs !== undefined ? { deadline: Date.now() + o.timeoutMs } : {};
  return new Promise((resolve, reject) => {
    const call = (client[method] as (r: unknown, md: grpc.Metadata, opts: grpc.CallOptions, cb: (e: grpc.ServiceError | null, v: T) => void) => grpc.ClientUnaryCall)(req, md, opts, (e, v) => (e ? reject(e) : resolve(v)));
    o.signal?.addEventListener('abort', () => call.cancel(), { once: true });
  });
}

type DecoderClient = grpc.Client & Record<string, (...args: unknown[]) => unknown>;

let ctor: (new (addr: string, creds: grpc.ChannelCredentials, opts?: grpc.ChannelOptions) => DecoderClient) | undefined;
function clientCtor(): NonNullable<typeof ctor> {
  if (!ctor) {
    // 64-bit integers as decimal strings: exact, converted by toSequence.
    const pkg = protoLoader.loadSync(PROTO_PATH, { keepCase: false, longs: String, enums: String, defaults: true });
    const loaded = grpc.loadPackageDefinition(pkg) as unknown as { cortexcast: { v1: { Decoder: NonNullable<typeof ctor> } } };
    ctor = loaded.cortexcast.v1.Decoder;
  }
  return ctor;
}

const toBytes = (a: Float32Array): Buffer => Buffer.from(a.buffer, a.byteOffset, a.byteLength);

const UINT64_MAX = 2n ** 64n - 1n;

/** A decimal uint64 from the wire -> number when exact, else BigInt. */
export const toSequence = (s: string | number): Sequence => exactInteger(s);

/** A sequence for the wire: a whole number in 1 .. 2^64 - 1, as a decimal string (never rounded). */
function wireSequence(s: Sequence): string {
  if (typeof s === 'number' && !Number.isSafeInteger(s)) throw new RangeError(`sequence ${s} is not an exact integer; pass a BigInt above 2^53`);
  const b = BigInt(s);
  if (b < 1n || b > UINT64_MAX) throw new RangeError(`sequence ${s} is outside 1 .. 2^64 - 1`);
  return b.toString();
}

/** A gRPC connection to a cortexcast server. */
export class DecoderConnection {
  readonly client: DecoderClient;
  private readonly md = new grpc.Metadata();

  constructor(address: string, opts: ConnectOptions = {}) {
    const creds = opts.ca ? grpc.credentials.createSsl(opts.ca) : grpc.credentials.createInsecure();
    // Each connection is its own HTTP/2 session: separate rigs should use separate connections.
    this.client = new (clientCtor())(address, creds, { 'grpc.max_receive_message_length': 16 * 2 ** 20, ...opts.channelOptions });
    if (opts.token) this.md.set('authorization', `Bearer ${opts.token}`);
  }

  private unary<T>(method: string, req: unknown, o: CallOptions = {}): Promise<T> {
    return unaryCall(this.client, this.md, method, req, o);
  }

  listModels(): Promise<{ models: ModelInfo[] }> {
    return this.unary('listModels', {});
  }

  getModel(name: string): Promise<ModelInfo> {
    return this.unary('getModel', { name });
  }

  reloadModels(): Promise<{ models: ModelInfo[] }> {
    return this.unary('reloadModels', {});
  }

  async decode(model: string, responses: Float32Array, o: CallOptions = {}): Promise<{ width: number; height: number; pixels: Uint8Array; values: Float32Array; decodeUs: number; provider: string }> {
    const r = await this.unary<{ width: number; height: number; pixels: Buffer; values: Buffer; decodeUs: number; provider: string }>('decode', { model, responses: toBytes(responses) }, o);
    const values = new Float32Array(r.values.byteLength / 4);
    new Uint8Array(values.buffer).set(r.values);
    return { ...r, pixels: new Uint8Array(r.pixels), values };
  }

  /** Open an ingest stream; frames go out with send(), acks come to onAck. */
  openStream(onAck: (a: FrameAck) => void = () => undefined): FrameStream {
    const call = (this.client.streamFrames as (md: grpc.Metadata) => grpc.ClientDuplexStream<unknown, unknown>)(this.md);
    return new FrameStream(call, onAck);
  }

  close(): void {
    this.client.close();
  }
}

/** Tensor metadata of the Open Inference Protocol (-1: a variable dimension). */
export interface TensorMetadata {
  name: string;
  datatype: string;
  shape: number[];
}

export interface V2InferResult {
  id: string;
  /** [B, 1, H, W] */
  shape: number[];
  /** z-scored image, B x H x W float32 */
  image: Float32Array;
  /** grey levels 0..255, B x H x W (empty when not requested) */
  pixels: Uint8Array;
}

let v2Ctor: (new (addr: string, creds: grpc.ChannelCredentials, opts?: grpc.ChannelOptions) => DecoderClient) | undefined;

/**
 * A client of the Open Inference Protocol (KServe v2 / Triton gRPC): the same calls work against
 * cortexcast and against Triton serving a `cortexcast export triton` repository, since both name
 * the tensors `responses` (in), `image` and `pixels` (out).
 */
export class InferenceV2Connection {
  readonly client: DecoderClient;
  private readonly md = new grpc.Metadata();

  constructor(address: string, opts: ConnectOptions = {}) {
    if (!v2Ctor) {
      const pkg = protoLoader.loadSync(V2_PROTO_PATH, { keepCase: true, longs: Number, enums: String, defaults: true, oneofs: true });
      v2Ctor = (grpc.loadPackageDefinition(pkg) as unknown as { inference: { GRPCInferenceService: NonNullable<typeof v2Ctor> } }).inference.GRPCInferenceService;
    }
    const creds = opts.ca ? grpc.credentials.createSsl(opts.ca) : grpc.credentials.createInsecure();
    this.client = new v2Ctor(address, creds, { 'grpc.max_receive_message_length': 64 * 2 ** 20, ...opts.channelOptions });
    if (opts.token) this.md.set('authorization', `Bearer ${opts.token}`);
  }

  private call<T>(method: string, req: unknown, o: CallOptions = {}): Promise<T> {
    return unaryCall(this.client, this.md, method, req, o);
  }

  async serverLive(): Promise<boolean> {
    return (await this.call<{ live: boolean }>('ServerLive', {})).live;
  }

  async serverReady(): Promise<boolean> {
    return (await this.call<{ ready: boolean }>('ServerReady', {})).ready;
  }

  async modelReady(name: string, version = ''): Promise<boolean> {
    return (await this.call<{ ready: boolean }>('ModelReady', { name, version })).ready;
  }

  serverMetadata(): Promise<{ name: string; version: string; extensions: string[] }> {
    return this.call('ServerMetadata', {});
  }

  modelMetadata(name: string, version = ''): Promise<{ name: string; versions: string[]; platform: string; inputs: TensorMetadata[]; outputs: TensorMetadata[]; properties: Record<string, string> }> {
    return this.call('ModelMetadata', { name, version });
  }

  /** Decode one or more frames (raw responses) in one ModelInfer. */
  async infer(model: string, rows: Float32Array[], o: CallOptions & { typed?: boolean; outputs?: string[]; id?: string } = {}): Promise<V2InferResult> {
    const n = rows[0]?.length ?? 0;
    const flat = new Float32Array(rows.length * n);
    rows.forEach((r, i) => flat.set(r, i * n));
    const input = { name: 'responses', datatype: 'FP32', shape: [rows.length, n], ...(o.typed ? { contents: { fp32_contents: [...flat] } } : {}) };
    const res = await this.call<{ id: string; outputs: TensorMetadata[]; raw_output_contents: Buffer[] }>(
      'ModelInfer',
      { model_name: model, id: o.id ?? '', inputs: [input], outputs: (o.outputs ?? []).map((name) => ({ name })), raw_input_contents: o.typed ? [] : [toBytes(flat)] },
      o,
    );
    const at = (name: string): Buffer | undefined => res.raw_output_contents[res.outputs.findIndex((t) => t.name === name)];
    const img = at('image');
    const image = new Float32Array(img ? img.byteLength / 4 : 0);
    if (img) new Uint8Array(image.buffer).set(img);
    return { id: res.id, shape: res.outputs[0]?.shape ?? [], image, pixels: new Uint8Array(at('pixels') ?? []) };
  }

  close(): void {
    this.client.close();
  }
}

export interface ModelInfo {
  name: string;
  kind: string;
  neurons: number;
  width: number;
  height: number;
  provider: string;
  workers: number;
  metrics: Record<string, number>;
  bundlePath: string;
  manifestJson: string;
}

export class FrameStream {
  /** Resolves with the final status when the server ends the stream (or rejects with its error). */
  readonly done: Promise<grpc.StatusObject>;

  constructor(
    private readonly call: grpc.ClientDuplexStream<unknown, unknown>,
    onAck: (a: FrameAck) => void,
  ) {
    call.on('data', (a: Omit<FrameAck, 'sequence'> & { sequence: string }) => onAck({ ...a, sequence: toSequence(a.sequence) }));
    this.done = new Promise((resolve, reject) => {
      call.on('status', (s: grpc.StatusObject) => (s.code === grpc.status.OK ? resolve(s) : reject(Object.assign(new Error(s.details), s))));
      call.on('error', () => undefined); // surfaced through 'status'
    });
    // A stream may end before anyone awaits `done`; that is not an unhandled rejection.
    this.done.catch(() => undefined);
  }

  /** Queue a frame; false when the transport wants the caller to wait for 'drain'. */
  send(f: OutgoingFrame): boolean {
    return this.call.write({
      streamId: f.streamId,
      model: f.model,
      sequence: wireSequence(f.sequence),
      acquiredAtUs: String(f.acquiredAtUs ?? Math.round((performance.timeOrigin + performance.now()) * 1000)),
      responses: toBytes(f.responses),
      unitIds: (f.unitIds ?? []).map(String),
      imageId: String(f.imageId ?? 0),
      stimulus: f.stimulus ? Buffer.from(f.stimulus.pixels.buffer, f.stimulus.pixels.byteOffset, f.stimulus.pixels.byteLength) : Buffer.alloc(0),
      stimulusWidth: f.stimulus?.width ?? 0,
      stimulusHeight: f.stimulus?.height ?? 0,
    });
  }

  /** Resolves once the transport can take more frames. */
  drained(): Promise<void> {
    return new Promise((r) => this.call.once('drain', () => r()));
  }

  end(): void {
    this.call.end();
  }

  cancel(): void {
    this.call.cancel();
  }
}

/** A decoded frame as the server sends it over WebSocket (see README "WebSocket frames"). */
export interface FrameMessage {
  type: 'frame';
  stream: string;
  model: string;
  seq: Sequence;
  imageId?: number;
  stimulus?: { width: number; height: number; pixels: Uint8Array };
  provider: string;
  width: number;
  height: number;
  pixels: Uint8Array;
  values?: Float32Array;
  t: { acquired?: number; ingested: number; decodeStart: number; decodeEnd: number; sent: number };
  /** Added by the client: epoch ms when the message arrived. */
  received: number;
}

export interface HelloMessage {
  type: 'hello';
  subscription: { stream: string; model: string; float: boolean };
  models: { name: string; kind: string; neurons: number; width: number; height: number; provider: string }[];
}

const unpackr = new Unpackr({ useRecords: false });

export interface SubscribeOptions {
  stream?: string;
  model?: string;
  float?: boolean;
  token?: string;
}

/**
 * Subscribe to decoded frames. Iterate the returned object (async iterator); it ends when the socket
 * closes. `hello` resolves with the server's greeting.
 */
export function subscribe(httpUrl: string, o: SubscribeOptions = {}): AsyncIterable<FrameMessage> & { hello: Promise<HelloMessage>; close(): void; socket: WebSocket } {
  const u = new URL('/ws', httpUrl.replace(/^http/, 'ws'));
  u.searchParams.set('stream', o.stream ?? '*');
  u.searchParams.set('model', o.model ?? '*');
  if (o.float) u.searchParams.set('float', '1');
  const ws = new WebSocket(u, { headers: o.token ? { authorization: `Bearer ${o.token}` } : {} });
  const queue: FrameMessage[] = [];
  let wake: (() => void) | undefined;
  let ended = false;
  let helloResolve!: (h: HelloMessage) => void;
  let helloReject!: (e: Error) => void;
  const hello = new Promise<HelloMessage>((res, rej) => ((helloResolve = res), (helloReject = rej)));
  hello.catch(() => undefined);
  ws.on('message', (data: Buffer) => {
    const received = performance.timeOrigin + performance.now();
    const m = unpackr.unpack(data) as FrameMessage | HelloMessage;
    if (m.type === 'hello') helloResolve(m);
    else {
      // values travel as msgpack bin (little-endian float32 bytes), readable by any msgpack library.
      const raw = m.values as unknown as Uint8Array | undefined;
      const values = raw ? new Float32Array(new Uint8Array(raw).buffer) : undefined;
      queue.push({ ...m, pixels: new Uint8Array(m.pixels), values, received });
      wake?.();
    }
  });
  const finish = (e?: Error): void => {
    ended = true;
    helloReject(e ?? new Error('socket closed before hello'));
    wake?.();
  };
  ws.on('close', (code, reason) => finish(new Error(`closed ${code} ${reason.toString()}`)));
  ws.on('error', (e) => finish(e));
  return {
    hello,
    socket: ws,
    close: () => ws.close(),
    async *[Symbol.asyncIterator]() {
      for (;;) {
        while (queue.length) yield queue.shift()!;
        if (ended) return;
        await new Promise<void>((r) => (wake = r));
        wake = undefined;
      }
    },
  };
}
