import ort from 'onnxruntime-node';
import { assertDecoder, type Manifest } from './bundle.js';
import { Rng } from './rng.js';

/**
 * How an iterative decoder runs (kind `invenc`): the bundle's graph is ONE optimisation step,
 * (target responses, image) -> next image; decoding repeats it `steps` times from a fixed start
 * image (one randn image from `seed`, shared by every row, so decodes are reproducible). The step
 * count is the latency/quality knob. The manifest schema (bundle.ts) defines the fields.
 */
export type IterativeSpec = NonNullable<Manifest['iterative']>;

/** A normalised 2-D Gaussian [1, 1, 2r+1, 2r+1] (gradient blur of MEIs and the inverted encoder). */
export function gaussianKernel2d(sigma: number, radius: number): Float32Array {
  const k = 2 * radius + 1;
  const out = new Float32Array(k * k);
  let sum = 0;
  for (let y = 0; y < k; y++)
    for (let x = 0; x < k; x++) {
      const v = Math.exp(-((x - radius) ** 2 + (y - radius) ** 2) / (2 * sigma * sigma));
      out[y * k + x] = v;
      sum += v;
    }
  for (let i = 0; i < out.length; i++) out[i] /= sum;
  return out;
}

/** The inverted encoder's start: randn (1, H, W) from a seed. */
export function startImage(seed: number, h: number, w: number): Float32Array {
  const rng = new Rng(seed);
  return Float32Array.from({ length: h * w }, () => rng.normal());
}

/**
 * Runs a decoder bundle's session on rows of decoder inputs (std-scaled responses), one-shot or
 * iterative. The server's workers and offline evaluation both decode through this, so they agree.
 */
export class DecoderRunner {
  private readonly kernel?: ort.Tensor;
  private readonly start?: Float32Array;

  constructor(
    readonly session: ort.InferenceSession,
    private readonly m: Pick<Manifest, 'onnx' | 'input' | 'output' | 'kind' | 'iterative'>,
  ) {
    assertDecoder(m, m.onnx.file);
    const it = m.iterative;
    if (it) {
      const k = 2 * it.blurRadius + 1;
      this.kernel = new ort.Tensor('float32', gaussianKernel2d(it.blurSigma, it.blurRadius), [1, 1, k, k]);
      this.start = startImage(it.seed, m.output.height, m.output.width);
    }
  }

  get iterative(): IterativeSpec | undefined {
    return this.m.iterative;
  }

  /** Decode `rows` rows of `input` ([rows, neurons]); `steps` overrides an iterative decoder's count. */
  async run(input: Float32Array, rows: number, steps?: number): Promise<Float32Array> {
    const n = this.m.input.neurons;
    const x = new ort.Tensor('float32', input, [rows, n]);
    const it = this.m.iterative;
    if (!it) {
      const out = await this.session.run({ [this.m.onnx.inputName]: x });
      return out[this.m.onnx.outputName].data as Float32Array;
    }
    const P = this.m.output.height * this.m.output.width;
    const image = new Float32Array(rows * P);
    for (let r = 0; r < rows; r++) image.set(this.start!, r * P);
    return this.runFrom(image, input, rows, steps ?? it.steps);
  }

  /** Iterative decoders: `steps` steps from the given images [rows, H*W]. */
  async runFrom(start: Float32Array, input: Float32Array, rows: number, steps: number): Promise<Float32Array> {
    const it = this.m.iterative;
    if (!it) throw new Error('runFrom is for iterative decoders');
    const { height: h, width: w } = this.m.output;
    const x = new ort.Tensor('float32', input, [rows, this.m.input.neurons]);
    const lr = new ort.Tensor('float32', Float32Array.of(it.lr), []);
    let image = start;
    for (let s = 0; s < steps; s++) {
      const out = await this.session.run({
        [this.m.onnx.inputName]: x,
        [it.imageInput]: new ort.Tensor('float32', image, [rows, 1, h, w]),
        [it.lrInput]: lr,
        [it.kernelInput]: this.kernel!,
      });
      image = out[this.m.onnx.outputName].data as Float32Array;
    }
    return image;
  }
}
