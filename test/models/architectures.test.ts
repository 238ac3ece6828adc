import { describe, expect, it } from 'vitest';
import { CNN_PROFILES, cnnDecoder } from '../../src/models/architectures/cnn.js';
import { ENCODER_PROFILES, encoderNet } from '../../src/models/architectures/encoder.js';
import { GAN_PROFILES, ganDiscriminator, ganGenerator } from '../../src/models/architectures/gan.js';
import { newGraph, tensor } from '../../src/models/onnx/index.js';
import { createSession, runOnce } from '../../src/models/ort.js';
import { Rng } from '../../src/models/rng.js';

const ctxFor = (mode: 'train' | 'eval' = 'eval') => {
  const g = newGraph('t');
  return { g, rng: new Rng(1), mode, params: [] as string[], state: new Map(), ...(mode === 'train' ? { dropoutSeed: g.input('seed', 'float64', []) } : {}) };
};

describe('architectures build with the shapes the report gives', () => {
  it.each(Object.keys(CNN_PROFILES) as (keyof typeof CNN_PROFILES)[])('CNN %s: responses -> [B, 1, 36, 64]', (p) => {
    const ctx = ctxFor();
    const m = cnnDecoder(ctx, 50, 'batch', CNN_PROFILES[p]);
    expect(m.output.shape).toEqual(['batch', 1, 36, 64]);
  });

  it('the appendix CNN reads in to 432 = 3 x 9 x 16', () => {
    const ctx = ctxFor();
    cnnDecoder(ctx, 50, 'batch', CNN_PROFILES.appendix);
    expect(ctx.g.initializers.get('readin/fc/weight')!.tensor.dims).toEqual([50, 432]);
  });

  it.each(['paper', 'small', 'realtime'] as const)('GAN %s: MEI readin + core -> [B, 1, 36, 64]; discriminator -> [B, 1]', (p) => {
    const ctx = ctxFor('train');
    const K = 4;
    const m = ganGenerator(ctx, 2, GAN_PROFILES[p], { neurons: 10, mei: { meis: new Float32Array(K * 36 * 64), neuronIndex: [0, 3, 5, 9] } });
    expect(m.output.shape).toEqual([2, 1, 36, 64]);
    expect(ganDiscriminator(ctx, m.output, GAN_PROFILES[p]).shape).toEqual([2, 1]);
    // The readin mixes neurons to the readin width.
    expect(ctx.g.initializers.get('readin/mix/weight')!.tensor.dims).toEqual([GAN_PROFILES[p].readinChannels, K, 1, 1]);
  });

  it('a GAN generator with few MEI neurons decodes a batch in ONNX Runtime (per-neuron rows are batch x K)', async () => {
    const ctx = ctxFor();
    const K = 8;
    const m = ganGenerator(ctx, 'batch', GAN_PROFILES.small, { neurons: 30, mei: { meis: new Float32Array(K * 36 * 64).fill(0.1), neuronIndex: [...Array(K).keys()] } });
    ctx.g.output(m.output, 'image');
    const { session } = await createSession(ctx.g);
    for (const rows of [1, 40]) {
      const out = await runOnce(session, { responses: tensor('float32', [rows, 30], new Float32Array(rows * 30).fill(0.5)) });
      expect(out.image.dims).toEqual([rows, 1, 36, 64]);
    }
  });

  it('the realtime GAN reads in on a 9 x 16 grid: its MEIs are 4 x 4 block means, its features are upsampled to 36 x 64', async () => {
    const ctx = ctxFor();
    const K = 3;
    const meis = Float32Array.from({ length: K * 36 * 64 }, (_, i) => Math.sin(i * 0.37) + (i % 64) / 64);
    const m = ganGenerator(ctx, 'batch', GAN_PROFILES.realtime, { neurons: 12, mei: { meis, neuronIndex: [0, 4, 11] } });
    const coarse = ctx.g.initializers.get('readin/meis')!.tensor;
    expect(coarse.dims).toEqual([K, 9, 16]);
    for (const [k, y, x] of [[0, 0, 0], [1, 4, 7], [2, 8, 15]]) {
      let sum = 0;
      for (let dy = 0; dy < 4; dy++) for (let dx = 0; dx < 4; dx++) sum += meis[k * 2304 + (4 * y + dy) * 64 + 4 * x + dx];
      expect((coarse.data as Float32Array)[k * 144 + y * 16 + x]).toBeCloseTo(sum / 16, 5);
    }
    // The context MLP draws 144-pixel maps, not 2,304-pixel ones: 1/16 of the small profile's readin work per neuron.
    const contextOut = [...ctx.g.initializers.entries()].find(([k]) => k.startsWith('readin/context_out/') && k.endsWith('weight'))![1].tensor;
    expect(contextOut.dims).toContain(144);
    ctx.g.output(m.output, 'image');
    const { session } = await createSession(ctx.g);
    const out = await runOnce(session, { responses: tensor('float32', [2, 12], Float32Array.from({ length: 24 }, (_, i) => i / 10)) });
    expect(out.image.dims).toEqual([2, 1, 36, 64]);
    expect([...(out.image.data as Float32Array)].every(Number.isFinite)).toBe(true);
  });

  it("the report's profiles record no readin grid: GAN runs saved before it existed resume with an unchanged config", () => {
    expect(GAN_PROFILES.small).not.toHaveProperty('readinDownsample');
    expect(GAN_PROFILES.paper).not.toHaveProperty('readinDownsample');
    expect(GAN_PROFILES.realtime.readinDownsample).toBe(4);
  });

  it.each([
    ['grid readin', { readin: 'grid' as const }],
    ['coordinates ablation', { coordinates: true }],
  ])('the realtime GAN builds with the %s', (_, extra) => {
    const ctx = ctxFor('train');
    const m = ganGenerator(ctx, 2, { ...GAN_PROFILES.realtime, ...extra }, { neurons: 10, mei: { meis: new Float32Array(2 * 36 * 64), neuronIndex: [1, 2], coordinates: new Float32Array(4) } });
    expect(m.output.shape).toEqual([2, 1, 36, 64]);
  });

  it('the grid readin is the grid network alone: no MEI tensor in the graph', () => {
    const ctx = ctxFor();
    const m = ganGenerator(ctx, 'batch', { ...GAN_PROFILES.small, readin: 'grid' }, { neurons: 10, mei: { meis: new Float32Array(0), neuronIndex: [1, 2] } });
    expect(m.output.shape).toEqual(['batch', 1, 36, 64]);
    expect([...ctx.g.initializers.keys()].some((k) => k.endsWith('/meis'))).toBe(false);
    expect(ctx.g.initializers.get('readin/mix/weight')!.tensor.dims).toEqual([32, 2, 1, 1]);
  });

  it('the encoder core turns 36x64 into a 28x56 feature map (k9, no padding) and reads out every neuron', () => {
    const ctx = ctxFor();
    const m = encoderNet(ctx, 'batch', 7, ENCODER_PROFILES.paper);
    expect(m.output.shape).toEqual(['batch', 7]);
    const reshape = ctx.g.nodes.find((n) => n.name.startsWith('readout/bilinear/Reshape'))!;
    expect(ctx.g.value(reshape.inputs[0]).shape).toEqual(['batch', 64, 28, 56]);
  });
});
