import * as grpc from '@grpc/grpc-js';
import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DecoderConnection, InferenceV2Connection } from '../../clients/lib/index.js';
import { encodeNpy } from '../../src/common/npy.js';
import { loadServerConfig } from '../../src/server/config.js';
import { CortexcastServer } from '../../src/server/server.js';
import { trainRidge } from '../../src/training/ridge/train-ridge.js';
import { repoRoot } from '../helpers/paths.js';
import { PY, protocPython, pythonGrpc } from '../helpers/python.js';
import { tinyDataset } from '../helpers/tiny-dataset.js';

const neurons = 200;
let server: CortexcastServer;
let own: DecoderConnection;
let v2: InferenceV2Connection;
let addr: string;
const frame = (seed: number): Float32Array => Float32Array.from({ length: neurons }, (_, i) => ((i * 7 + seed * 13) % 11) / 5);

beforeAll(async () => {
  const data = await tinyDataset({}, neurons);
  const bundle = join(mkdtempSync(join(tmpdir(), 'cc-v2-')), 'ridge');
  await trainRidge({ data, out: bundle, quiet: true, log: () => undefined });
  server = await new CortexcastServer(loadServerConfig({ flags: { grpcPort: 0, httpPort: 0, models: [{ name: 'ridge', path: bundle }] } }), () => undefined).start();
  addr = `127.0.0.1:${server.grpcPort}`;
  own = new DecoderConnection(addr);
  v2 = new InferenceV2Connection(addr);
}, 120_000);

afterAll(async () => {
  own?.close();
  v2?.close();
  await server?.close();
});

/** The server runs in this process: a Python client must run without blocking its event loop. */
function runPy(args: string[], env: Record<string, string>): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn(PY, args, { env: { ...process.env, ...env } });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (b: Buffer) => (stdout += b.toString()));
    p.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
    const timer = setTimeout(() => p.kill('SIGKILL'), 60_000);
    p.on('close', (status) => {
      clearTimeout(timer);
      resolve({ status, stdout, stderr });
    });
  });
}

const maxDiff = (a: ArrayLike<number>, b: ArrayLike<number>): number => {
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i] - b[i]));
  return d;
};

describe('Open Inference Protocol (inference.GRPCInferenceService) on the gRPC port', () => {
  it('health and metadata answer with the protocol names', async () => {
    expect(await v2.serverLive()).toBe(true);
    expect(await v2.serverReady()).toBe(true);
    expect(await v2.modelReady('ridge')).toBe(true);
    expect(await v2.modelReady('nope')).toBe(false);
    expect(await v2.serverMetadata()).toMatchObject({ name: 'cortexcast', extensions: [] });
    const meta = await v2.modelMetadata('ridge');
    expect(meta).toMatchObject({
      name: 'ridge',
      versions: ['1'],
      platform: 'onnxruntime_onnx',
      inputs: [{ name: 'responses', datatype: 'FP32', shape: [-1, neurons] }],
      outputs: [
        { name: 'image', datatype: 'FP32', shape: [-1, 1, 36, 64] },
        { name: 'pixels', datatype: 'UINT8', shape: [-1, 1, 36, 64] },
      ],
    });
    await expect(v2.modelMetadata('nope')).rejects.toMatchObject({ code: grpc.status.NOT_FOUND });
    await expect(v2.modelMetadata('ridge', '2')).rejects.toMatchObject({ code: grpc.status.NOT_FOUND });
  });

  it('ModelInfer (raw and typed contents, batched) equals cortexcast Decode of the same frames', async () => {
    const a = frame(1);
    const b = frame(2);
    const mine = [await own.decode('ridge', a), await own.decode('ridge', b)];
    const raw = await v2.infer('ridge', [a, b]);
    expect(raw.shape).toEqual([2, 1, 36, 64]);
    expect(maxDiff(raw.image.subarray(0, 2304), mine[0].values)).toBe(0);
    expect(maxDiff(raw.image.subarray(2304), mine[1].values)).toBe(0);
    expect(maxDiff(raw.pixels.subarray(0, 2304), mine[0].pixels)).toBe(0);
    const typed = await v2.infer('ridge', [a], { typed: true });
    expect(maxDiff(typed.image, mine[0].values)).toBe(0);
  });

  it('bad requests get the protocol statuses with a named reason; auth and limits apply', async () => {
    await expect(v2.infer('nope', [frame(1)])).rejects.toMatchObject({ code: grpc.status.NOT_FOUND });
    await expect(v2.infer('ridge', [new Float32Array(3)])).rejects.toMatchObject({ code: grpc.status.INVALID_ARGUMENT, details: expect.stringMatching(/^CC_ERR_INFER_REQUEST: .*input shape \[1,3\]/) });
    const nan = frame(1);
    nan[0] = NaN;
    await expect(v2.infer('ridge', [nan])).rejects.toMatchObject({ code: grpc.status.INVALID_ARGUMENT, details: expect.stringMatching(/^CC_ERR_NOT_FINITE/) });
    await expect(v2.infer('ridge', [frame(1)], { outputs: ['logits'] })).rejects.toMatchObject({ code: grpc.status.INVALID_ARGUMENT, details: expect.stringMatching(/unknown output 'logits'/) });
    const big = Array.from({ length: 300 }, () => frame(1));
    await expect(v2.infer('ridge', big)).rejects.toMatchObject({ code: grpc.status.INVALID_ARGUMENT, details: expect.stringMatching(/1 <= B <= 256/) });
    const text = await (await fetch(`http://127.0.0.1:${server.httpPort}/metrics`)).text();
    expect(text).toMatch(/cortexcast_frames_rejected_total\{reason="infer_request"\} [1-9]/);
    expect(text).toMatch(/cortexcast_unary_decodes_total\{model="ridge",code="OK"\} [1-9]/);
  });

  it('a stock Python grpcio client generated from the proto calls every RPC; its image equals cortexcast Decode (Debian python3-grpcio, python3-grpc-tools)', async (ctx) => {
    if (!pythonGrpc('Python Open Inference Protocol client')) return ctx.skip();
    const { dir: gen, stderr } = protocPython('inference/grpc_predict_v2.proto');
    expect(stderr).toBe('');
    const f = frame(7);
    const npy = join(gen, 'frame.npy');
    writeFileSync(npy, encodeNpy(f, [neurons]));
    const run = await runPy([join(repoRoot, 'clients/python/infer_v2.py'), '--server', addr, '--model', 'ridge', '--frame', npy], { PYTHONPATH: gen });
    expect(run.stderr).toBe('');
    expect(run.status).toBe(0);
    const out = JSON.parse(run.stdout) as { live: boolean; ready: boolean; model_ready: boolean; server: { name: string }; model: { inputs: { shape: number[] }[] }; raw: { id: string; shape: number[]; image: number[]; outputs: string[] }; typed: { image: number[] }; bad_shape: { code: string; details: string }; unknown_model: { code: string } };
    expect(out).toMatchObject({ live: true, ready: true, model_ready: true, server: { name: 'cortexcast' } });
    expect(out.model.inputs[0].shape).toEqual([-1, neurons]);
    expect(out.raw).toMatchObject({ id: 'py-raw', shape: [1, 1, 36, 64], outputs: ['image', 'pixels'] });
    const mine = await own.decode('ridge', f);
    expect(maxDiff(out.raw.image, mine.values)).toBe(0);
    expect(maxDiff(out.typed.image, mine.values)).toBe(0);
    expect(out.bad_shape).toMatchObject({ code: 'INVALID_ARGUMENT', details: expect.stringMatching(/^CC_ERR_INFER_REQUEST/) });
    expect(out.unknown_model.code).toBe('NOT_FOUND');
  });

  it('the Python rig example streams frames: DECODED acks, a bad frame REJECTED with its reason, a meaningful exit status', async (ctx) => {
    if (!pythonGrpc('clients/python/stream_frames.py')) return ctx.skip();
    const { dir: gen } = protocPython('cortexcast/v1/decoder.proto');
    const py = (extra: string[]) => runPy([join(repoRoot, 'clients/python/stream_frames.py'), '--server', addr, '--model', 'ridge', '--neurons', String(neurons), '--frames', '30', '--rate', '100', ...extra], { PYTHONPATH: gen });
    const ok = await py(['--stream-id', 'py-ok']);
    expect(ok.status).toBe(0);
    expect(ok.stdout).toMatch(/sent 30 frames: \{.*'DECODED': \d+/);
    const bad = await py(['--stream-id', 'py-bad', '--send-invalid', '5']);
    expect(bad.status).toBe(2);
    expect(bad.stderr).toMatch(`frame 5 rejected: CC_ERR_NEURON_COUNT: frame has ${neurons - 1} neurons, model ridge expects ${neurons}`);
    const down = await runPy([join(repoRoot, 'clients/python/stream_frames.py'), '--server', '127.0.0.1:1', '--model', 'ridge', '--neurons', '3', '--frames', '2', '--rate', '100'], { PYTHONPATH: gen });
    expect(down.status).toBe(1);
    expect(down.stderr).toMatch(/stream failed: UNAVAILABLE/);
  });
});
