import * as grpc from '@grpc/grpc-js';
import { cpSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DecoderConnection, InferenceV2Connection } from '../../clients/lib/index.js';
import { writeDirAtomic } from '../../src/common/atomic-dir.js';
import { loadBundle, writeBundle } from '../../src/models/bundle.js';
import { newGraph, tensor, writeModel } from '../../src/models/onnx/index.js';
import { loadServerConfig, type ServerConfigInput } from '../../src/server/config.js';
import { V2_MAX_ROWS, v2RequestBytes } from '../../src/server/inference-v2.js';
import { CortexcastServer } from '../../src/server/server.js';
import { trainRidge } from '../../src/training/ridge/train-ridge.js';
import { tinyDataset } from '../helpers/tiny-dataset.js';

/**
 * Batched ModelInfer on the Open Inference Protocol: a [B, N] request is one unit of work (admitted
 * or refused whole, one worker run), callers are served round-robin, and the message limit follows
 * the served models. Defaults throughout (limits.maxQueuedDecodes 64, limits.maxMessageBytes 1 MiB,
 * one worker, maxBatch 8), with a 2,000-neuron ridge as in the field.
 */
const NEURONS = 2000;
const SMALL = 200;
const root = mkdtempSync(join(tmpdir(), 'cc-oip-batch-'));
let wide: string;
let narrow: string;
const servers: CortexcastServer[] = [];
const conns: { close(): void }[] = [];

const quiet = (): void => undefined;
const frame = (seed: number, n = NEURONS): Float32Array => Float32Array.from({ length: n }, (_, i) => ((i * 7 + seed * 13) % 11) / 5 + (seed % 5) / 10);
/** Every client on its own connection (grpc-js would otherwise share one between clients of a process). */
const own = { channelOptions: { 'grpc.use_local_subchannel_pool': 1 } };

async function start(models: { name: string; path: string }[], extra: Partial<ServerConfigInput> = {}): Promise<{ server: CortexcastServer; addr: string }> {
  const server = await new CortexcastServer(loadServerConfig({ flags: { grpcPort: 0, httpPort: 0, models, shutdownGraceMs: 2000, ...extra } }), quiet).start();
  servers.push(server);
  return { server, addr: `127.0.0.1:${server.grpcPort}` };
}
function v2(addr: string): InferenceV2Connection {
  const c = new InferenceV2Connection(addr, own);
  conns.push(c);
  return c;
}
function decoder(addr: string): DecoderConnection {
  const c = new DecoderConnection(addr, own);
  conns.push(c);
  return c;
}

beforeAll(async () => {
  wide = join(root, 'ridge-2000');
  await trainRidge({ data: await tinyDataset({}, NEURONS), out: wide, quiet: true, log: quiet });
  narrow = join(root, 'ridge-200');
  await trainRidge({ data: await tinyDataset({}, SMALL), out: narrow, quiet: true, log: quiet });
}, 300_000);

afterAll(async () => {
  for (const c of conns) c.close();
  await Promise.all(servers.map((s) => s.close()));
});

describe('batched ModelInfer is one unit of work', () => {
  it('B = 100 and B = 256 of a 2,000-neuron model are served (not queue_full, not over the message limit), and equal B single Decode calls exactly', async () => {
    const { server, addr } = await start([{ name: 'ridge', path: wide }]);
    const client = v2(addr);
    const single = decoder(addr);
    for (const B of [100, V2_MAX_ROWS]) {
      const rows = Array.from({ length: B }, (_, i) => frame(i + B));
      const out = await client.infer('ridge', rows);
      expect(out.shape).toEqual([B, 1, 36, 64]);
      const P = 36 * 64;
      for (let i = 0; i < B; i++) {
        const one = await single.decode('ridge', rows[i]);
        // Bit-identical: the same floats, not merely close ones.
        expect(Buffer.from(out.image.buffer, out.image.byteOffset + i * P * 4, P * 4).equals(Buffer.from(one.values.buffer, one.values.byteOffset, P * 4)), `row ${i} of ${B}`).toBe(true);
        expect(Buffer.from(out.pixels.subarray(i * P, (i + 1) * P)).equals(Buffer.from(one.pixels)), `pixels of row ${i} of ${B}`).toBe(true);
      }
    }
    // One run per batch: exactly two runs had more than 64 frames (the 100- and the 256-row one).
    const text = await (await fetch(`http://127.0.0.1:${server.httpPort}/metrics`)).text();
    const count = Number(/cortexcast_decode_batch_frames_count\{model="ridge"\} (\d+)/.exec(text)?.[1]);
    const upTo64 = Number(/cortexcast_decode_batch_frames_bucket\{le="64",model="ridge"\} (\d+)/.exec(text)?.[1]);
    expect(count - upTo64).toBe(2);
    // The message limit is the rule's, so the 2 MB request above passed and a 2,001-neuron one would too.
    expect(v2RequestBytes([{ neurons: NEURONS }], 2 ** 20)).toBe(256 * NEURONS * 4 + 64 * 1024);
  }, 180_000);

  it('two clients sending 64-row batches are both admitted, and a third client\'s single Decode is served within a few runs, not behind every queued row', async () => {
    const { server, addr } = await start([{ name: 'ridge', path: wide }]);
    const [a, b] = [v2(addr), v2(addr)];
    const c = decoder(addr);
    const batch = (seed: number) => Array.from({ length: 64 }, (_, i) => frame(seed * 100 + i));
    const done: string[] = [];
    const calls: Promise<unknown>[] = [];
    // 2 x 12 batches of 64 rows = 1,536 rows queued: far over the 64-unit queue as rows, well under it as units.
    for (let k = 0; k < 12; k++) {
      calls.push(a.infer('ridge', batch(k)).then(() => done.push('a')));
      calls.push(b.infer('ridge', batch(50 + k)).then(() => done.push('b')));
    }
    // Once at least 8 batches wait, the single call arrives (in arrival order it would be 9th or later).
    let depth = 0;
    for (const t0 = Date.now(); Date.now() - t0 < 20_000 && depth < 8; await new Promise((r) => setTimeout(r, 2))) depth = server.scheduler.queueDepth('ridge');
    expect(depth).toBeGreaterThanOrEqual(8);
    const aheadOfSingle = done.length;
    calls.push(c.decode('ridge', frame(999)).then(() => done.push('c')));
    const settled = await Promise.allSettled(calls);
    expect(settled.filter((s) => s.status === 'rejected').map((s) => String((s as PromiseRejectedResult).reason))).toEqual([]);
    expect(done.filter((x) => x === 'a')).toHaveLength(12);
    expect(done.filter((x) => x === 'b')).toHaveLength(12);
    // Round-robin over callers: the running batch and at most one more of each batching client
    // finish between the single call's arrival and its answer (one more for answers in transit),
    // where a queue in arrival order would put it behind every batch still waiting.
    const after = done.indexOf('c') - aheadOfSingle;
    expect(after).toBeLessThanOrEqual(4);
  }, 180_000);

  it('callers are served round-robin, one unit each in turn, whatever order their units arrived in', async () => {
    const { server } = await start([{ name: 'ridge', path: wide }]);
    const order: string[] = [];
    const unit = (caller: string, rows: number, k: number): Promise<void> =>
      new Promise((resolve, reject) =>
        server.scheduler.submitUnary(
          {
            model: 'ridge',
            raw: new Float32Array(rows * NEURONS).fill(k / 10),
            rows,
            caller,
            ingestedMs: 0,
            settle: (o) => {
              if (o.status !== 'DECODED') return reject(new Error(`${caller}: ${o.reason}`));
              expect(o.values.length).toBe(rows * 36 * 64);
              order.push(caller);
              resolve();
            },
          },
          60_000,
        ),
      );
    // All queued at once (the first starts at once on the only worker): A's five batches first,
    // then B's five, then C's single frame.
    const calls = [...[0, 1, 2, 3, 4].map((k) => unit('A', 64, k)), ...[0, 1, 2, 3, 4].map((k) => unit('B', 64, k)), unit('C', 1, 0)];
    await Promise.all(calls);
    expect(order).toEqual(['A', 'B', 'C', 'A', 'B', 'A', 'B', 'A', 'B', 'A', 'B']);
  }, 60_000);

  it('a batch is refused whole when the queue is full (never half decoded)', async () => {
    const { addr } = await start([{ name: 'ridge', path: wide }], { limits: { maxQueuedDecodes: 2 } });
    const client = v2(addr);
    const results = await Promise.allSettled(Array.from({ length: 8 }, (_, k) => client.infer('ridge', Array.from({ length: 64 }, (_, i) => frame(k * 64 + i)))));
    const ok = results.filter((r) => r.status === 'fulfilled') as PromiseFulfilledResult<{ shape: number[] }>[];
    const refused = results.filter((r) => r.status === 'rejected') as PromiseRejectedResult[];
    expect(ok.length).toBeGreaterThanOrEqual(2);
    expect(refused.length).toBeGreaterThan(0);
    for (const r of ok) expect(r.value.shape).toEqual([64, 1, 36, 64]);
    for (const r of refused) expect(r.reason).toMatchObject({ code: grpc.status.RESOURCE_EXHAUSTED, details: expect.stringMatching(/^queue_full: .*limits\.maxQueuedDecodes/) });
  }, 120_000);

  it('the message limit is recomputed on reload: a model with more neurons takes full batches after the reload', async () => {
    const live = join(root, 'live');
    cpSync(narrow, live, { recursive: true });
    const { server, addr } = await start([{ name: 'live', path: live }]);
    const client = v2(addr);
    expect((await client.infer('live', Array.from({ length: 256 }, (_, i) => frame(i, SMALL)))).shape[0]).toBe(256);
    // Swap in the 2,000-neuron bundle and reload: 256 x 2,000 x 4 bytes = 2 MB, over the 1 MiB default.
    writeDirAtomic(live, (dir) => cpSync(wide, dir, { recursive: true }));
    await server.reload();
    const out = await client.infer('live', Array.from({ length: 256 }, (_, i) => frame(i)));
    expect(out.shape).toEqual([256, 1, 36, 64]);
    // Over the rule's limit is still refused, with the code and the limit named.
    await expect(client.infer('live', Array.from({ length: 256 }, () => new Float32Array(NEURONS + 100).fill(1)))).rejects.toMatchObject({ code: grpc.status.RESOURCE_EXHAUSTED, details: expect.stringMatching(/^CC_ERR_MESSAGE_TOO_LARGE/) });
  }, 180_000);
});

describe("decoder graphs: output size checked against the manifest, fixed batch of 1 looped", () => {
  it('at load: a manifest whose image size disagrees with the graph is refused with CC_ERR_BUNDLE', async () => {
    const bad = join(root, 'bad-size');
    cpSync(narrow, bad, { recursive: true });
    const man = JSON.parse(readFileSync(join(bad, 'manifest.json'), 'utf8')) as { output: { height: number } };
    man.output.height = 40;
    writeFileSync(join(bad, 'manifest.json'), JSON.stringify(man));
    await expect(new CortexcastServer(loadServerConfig({ flags: { grpcPort: 0, httpPort: 0, models: [{ name: 'bad', path: bad }] } }), quiet).start()).rejects.toThrow(
      /CC_ERR_BUNDLE: .*gave 2304 values for 1 row\(s\); the manifest's 40x64 image needs 2560/,
    );
  }, 60_000);

  it('per decode: a graph that answers one image for any batch fails the call (INTERNAL, CC_ERR_BUNDLE), never a short DECODED image', async () => {
    // responses [batch, N] -> mean over the batch -> one image: right for 1 row, short for more.
    const src = loadBundle(narrow);
    const g = newGraph('collapses-batch');
    const x = g.input('responses', 'float32', ['batch', SMALL]);
    const w = g.initializer('w', tensor('float32', [SMALL, 36 * 64], Float32Array.from({ length: SMALL * 36 * 64 }, (_, i) => (i % 13) / 100)));
    const mean = g.op('ReduceMean', [x], { axes: [0], keepdims: 1 });
    const shape = g.initializer('shape', tensor('int64', [4], BigInt64Array.from([1n, 1n, 36n, 64n])));
    g.output(g.op('Reshape', [g.op('MatMul', [mean, w]), shape]), 'image');
    const dir = join(root, 'collapses');
    const m = src.manifest;
    writeBundle(dir, { name: 'collapses', kind: 'ridge', model: writeModel(g), inputName: 'responses', outputName: 'image', opset: 17, unitIds: src.unitIds, stdScale: src.stdScale, responseScaling: m.input.responseScaling, height: 36, width: 64, pixelMean: m.output.pixelMean, pixelStd: m.output.pixelStd, training: m.training, version: 'test', onnxruntime: 'test' });
    const { addr } = await start([{ name: 'collapses', path: dir }]);
    const client = v2(addr);
    expect((await client.infer('collapses', [frame(1, SMALL)])).shape).toEqual([1, 1, 36, 64]);
    await expect(client.infer('collapses', [frame(1, SMALL), frame(2, SMALL)])).rejects.toMatchObject({
      code: grpc.status.INTERNAL,
      details: expect.stringMatching(/CC_ERR_BUNDLE: .*gave 2304 values for 2 row\(s\)/),
    });
  }, 60_000);
  it('a graph with a fixed batch of 1 is looped inside the worker: a B-row request is still one call and equals B single calls', async () => {
    const src = loadBundle(narrow);
    const g = newGraph('batch-of-one');
    const x = g.input('responses', 'float32', [1, SMALL]);
    const w = g.initializer('w', tensor('float32', [SMALL, 36 * 64], Float32Array.from({ length: SMALL * 36 * 64 }, (_, i) => ((i * 7) % 17) / 100 - 0.08)));
    const shape = g.initializer('shape', tensor('int64', [4], BigInt64Array.from([1n, 1n, 36n, 64n])));
    g.output(g.op('Reshape', [g.op('MatMul', [x, w]), shape]), 'image');
    const dir = join(root, 'batch-of-one');
    const m = src.manifest;
    writeBundle(dir, { name: 'one', kind: 'ridge', model: writeModel(g), inputName: 'responses', outputName: 'image', opset: 17, unitIds: src.unitIds, stdScale: src.stdScale, responseScaling: m.input.responseScaling, height: 36, width: 64, pixelMean: m.output.pixelMean, pixelStd: m.output.pixelStd, training: m.training, version: 'test', onnxruntime: 'test' });
    const { addr } = await start([{ name: 'one', path: dir }]);
    const client = v2(addr);
    const rows = Array.from({ length: 5 }, (_, i) => frame(i, SMALL));
    const out = await client.infer('one', rows);
    expect(out.shape).toEqual([5, 1, 36, 64]);
    const P = 36 * 64;
    for (let i = 0; i < rows.length; i++) {
      const one = await client.infer('one', [rows[i]]);
      expect(Buffer.from(out.image.buffer, out.image.byteOffset + i * P * 4, P * 4).equals(Buffer.from(one.image.buffer, one.image.byteOffset, P * 4)), `row ${i}`).toBe(true);
    }
  }, 60_000);
});
