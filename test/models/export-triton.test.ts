import { spawnSync } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DecoderConnection, InferenceV2Connection } from '../../clients/lib/index.js';
import { exportTriton, parseInstances } from '../../src/models/export-triton.js';
import { loadServerConfig } from '../../src/server/config.js';
import { CortexcastServer } from '../../src/server/server.js';
import { trainRidge } from '../../src/training/ridge/train-ridge.js';
import { onnxCheck } from '../helpers/onnx-check.js';
import { PY, protocPython, pythonGrpc } from '../helpers/python.js';
import { tinyDataset } from '../helpers/tiny-dataset.js';

/**
 * `export triton`: the exported graph takes raw responses, so Triton serving it gives what
 * cortexcast serves. Checked with onnxruntime on the exported file against the live server, for
 * both response transforms; config.pbtxt parsed against the model-configuration schema subset.
 */
const neurons = 200;
let plain: string;
let logT: string;
let server: CortexcastServer;
let own: DecoderConnection;

beforeAll(async () => {
  const data = await tinyDataset({}, neurons);
  const root = mkdtempSync(join(tmpdir(), 'cc-triton-'));
  plain = join(root, 'ridge');
  await trainRidge({ data, out: plain, quiet: true, log: () => undefined });
  // The same weights behind the report's log transform: the server and the export must both apply it.
  logT = join(root, 'ridge-log');
  cpSync(plain, logT, { recursive: true });
  const man = JSON.parse(readFileSync(join(logT, 'manifest.json'), 'utf8')) as { input: { transform: string } };
  man.input.transform = 'log10clamp';
  writeFileSync(join(logT, 'manifest.json'), JSON.stringify(man));
  server = await new CortexcastServer(loadServerConfig({ flags: { grpcPort: 0, httpPort: 0, models: [{ name: 'plain', path: plain }, { name: 'logt', path: logT }] } }), () => undefined).start();
  own = new DecoderConnection(`127.0.0.1:${server.grpcPort}`);
}, 120_000);

afterAll(async () => {
  own?.close();
  await server?.close();
});

const frames = [0, 1, 2].map((s) => Float32Array.from({ length: neurons }, (_, i) => ((i * 7 + s * 13) % 11) / 5 + (i % 3 === 0 ? 0 : 0.2)));

describe('export triton', () => {
  for (const [model, dir] of [
    ['plain', () => plain],
    ['logt', () => logT],
  ] as const)
    it(`raw responses through the exported graph equal the server's decode (${model}): image 1e-6, grey levels +-1`, async () => {
      const repo = mkdtempSync(join(tmpdir(), 'cc-repo-'));
      const r = exportTriton(dir(), repo, { name: model, instances: parseInstances('cpu:2') });
      const session = await ort.InferenceSession.create(join(r.dir, '1', 'model.onnx'));
      expect(session.inputNames).toEqual(['responses']);
      expect(session.outputNames).toEqual(['image', 'pixels']);
      const flat = new Float32Array(frames.length * neurons);
      frames.forEach((f, i) => flat.set(f, i * neurons));
      const out = await session.run({ responses: new ort.Tensor('float32', flat, [frames.length, neurons]) });
      expect(out.image.dims).toEqual([3, 1, 36, 64]);
      expect(out.pixels.type).toBe('uint8');
      const image = out.image.data as Float32Array;
      const pixels = out.pixels.data as Uint8Array;
      for (let k = 0; k < frames.length; k++) {
        const served = await own.decode(model, frames[k]);
        let dv = 0;
        let dp = 0;
        for (let i = 0; i < 2304; i++) {
          dv = Math.max(dv, Math.abs(image[k * 2304 + i] - served.values[i]));
          dp = Math.max(dp, Math.abs(pixels[k * 2304 + i] - served.pixels[i]));
        }
        expect(dv).toBeLessThan(1e-6);
        expect(dp).toBeLessThanOrEqual(1);
      }
      await session.release();
      const checked = onnxCheck(join(r.dir, '1', 'model.onnx'));
      if (checked) expect(checked).toMatch(/^ok \d+/);
    });

  it('config.pbtxt parses against the Triton model-configuration schema and says what Triton needs', (ctx) => {
    const repo = mkdtempSync(join(tmpdir(), 'cc-repo-'));
    const { config, dir } = exportTriton(plain, repo, { name: 'ridge-tiny', maxBatch: 32, queueDelayUs: 250 });
    expect(readFileSync(join(dir, 'config.pbtxt'), 'utf8')).toBe(config);
    if (!pythonGrpc('config.pbtxt against the Triton schema')) return ctx.skip();
    const { dir: gen, stderr } = protocPython('triton/model_config.proto');
    expect(stderr).toBe('');
    const parse = (file: string) =>
      spawnSync(
        PY,
        [
          '-c',
          `import json, sys
from google.protobuf import text_format, json_format
from triton import model_config_pb2 as mc
c = text_format.Parse(open(sys.argv[1]).read(), mc.ModelConfig())
print(json.dumps(json_format.MessageToDict(c)))`,
          file,
        ],
        { encoding: 'utf8', env: { ...process.env, PYTHONPATH: gen } },
      );
    const ok = parse(join(dir, 'config.pbtxt'));
    expect(ok.stderr).toBe('');
    const parsed = JSON.parse(ok.stdout) as Record<string, unknown>;
    expect(parsed).toMatchObject({
      name: 'ridge-tiny',
      backend: 'onnxruntime',
      maxBatchSize: 32,
      input: [{ name: 'responses', dataType: 'TYPE_FP32', dims: [String(neurons)] }],
      output: [
        { name: 'image', dataType: 'TYPE_FP32', dims: ['1', '36', '64'] },
        { name: 'pixels', dataType: 'TYPE_UINT8', dims: ['1', '36', '64'] },
      ],
      dynamicBatching: { preferredBatchSize: [2, 4, 8, 16, 32], maxQueueDelayMicroseconds: '250' },
      instanceGroup: [
        { count: 1, kind: 'KIND_GPU' },
        { count: 1, kind: 'KIND_CPU' },
      ],
    });
    // The schema check has teeth: a misspelt field or a wrong enum fails.
    const bad = join(gen, 'bad.pbtxt');
    writeFileSync(bad, config.replace('max_batch_size', 'max_batchsize'));
    expect(parse(bad).stderr).toMatch(/has no field named "max_batchsize"/);
    writeFileSync(bad, config.replace('TYPE_UINT8', 'TYPE_BYTE'));
    expect(parse(bad).stderr).toMatch(/TYPE_BYTE/);
  });

  it('the exported model and cortexcast answer the same Open Inference Protocol request shape', async () => {
    const v2 = new InferenceV2Connection(`127.0.0.1:${server.grpcPort}`);
    const meta = await v2.modelMetadata('plain');
    const repo = mkdtempSync(join(tmpdir(), 'cc-repo-'));
    const { config } = exportTriton(plain, repo, { name: 'plain' });
    for (const t of [...meta.inputs, ...meta.outputs]) expect(config).toContain(`name: "${t.name}" data_type: TYPE_${t.datatype}`);
    v2.close();
  });

  it('refuses what Triton cannot run, naming why', () => {
    const enc = join(mkdtempSync(join(tmpdir(), 'cc-enc-')), 'b');
    cpSync(plain, enc, { recursive: true });
    const man = JSON.parse(readFileSync(join(enc, 'manifest.json'), 'utf8')) as { kind: string };
    man.kind = 'encoder';
    writeFileSync(join(enc, 'manifest.json'), JSON.stringify(man));
    expect(() => exportTriton(enc, tmpdir())).toThrow(/CC_ERR_WRONG_KIND/);
    expect(() => parseInstances('tpu:1')).toThrow(/--instances: 'tpu:1'/);
    expect(() => exportTriton(plain, tmpdir(), { name: 'bad name' })).toThrow(/model name 'bad name'/);
  });
  it('a bundle named ".." or a hidden name cannot write outside the repository (CC_ERR_OPTION)', () => {
    const dotdot = join(mkdtempSync(join(tmpdir(), 'cc-dotdot-')), 'b');
    cpSync(plain, dotdot, { recursive: true });
    const man = JSON.parse(readFileSync(join(dotdot, 'manifest.json'), 'utf8')) as { name: string };
    man.name = '..';
    writeFileSync(join(dotdot, 'manifest.json'), JSON.stringify(man));
    const parent = mkdtempSync(join(tmpdir(), 'cc-repo-parent-'));
    const repo = join(parent, 'repo');
    mkdirSync(repo);
    expect(() => exportTriton(dotdot, repo)).toThrow(/^CC_ERR_OPTION: .*model name '\.\.'/);
    for (const name of ['.', '.hidden', 'a/b', '../x']) expect(() => exportTriton(plain, repo, { name }), name).toThrow(/^CC_ERR_OPTION/);
    expect(readdirSync(parent)).toEqual(['repo']);
    expect(readdirSync(repo)).toEqual([]);
  });

  it('re-exporting over a live model folder swaps it whole: other versions kept, nothing left beside it', () => {
    const repo = mkdtempSync(join(tmpdir(), 'cc-reexport-'));
    exportTriton(plain, repo, { name: 'm', maxBatch: 8 });
    mkdirSync(join(repo, 'm', '2'));
    writeFileSync(join(repo, 'm', '2', 'model.onnx'), 'another version');
    const first = readFileSync(join(repo, 'm', '1', 'model.onnx'));
    exportTriton(logT, repo, { name: 'm', maxBatch: 16 });
    expect(readdirSync(repo)).toEqual(['m']);
    expect(readdirSync(join(repo, 'm')).sort()).toEqual(['1', '2', 'config.pbtxt']);
    expect(readFileSync(join(repo, 'm', 'config.pbtxt'), 'utf8')).toMatch(/max_batch_size: 16/);
    expect(readFileSync(join(repo, 'm', '1', 'model.onnx')).equals(first)).toBe(false);
    expect(readFileSync(join(repo, 'm', '2', 'model.onnx'), 'utf8')).toBe('another version');
  });
});
