import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { readNpy, npyNumbers } from '../../common/npy.js';
import { resizeArea } from '../../datasets/image-ops.js';
import type { SensoriumDataset } from '../../datasets/sensorium.js';
import { NEURON_PARAM_KEYS, receptiveFields, stimulusContrast, V1Model, type NeuronParams, type SimulatorConfig } from './simulator.js';

/**
 * Ground truth of a session made by `cortexcast synth`: the simulator rebuilt from meta/simulation,
 * so encoders can be scored against the noise-free response and MEIs against the true receptive
 * fields. Undefined for recorded data.
 */
export class SimulatedTruth {
  private constructor(
    readonly cfg: SimulatorConfig,
    readonly params: NeuronParams,
    private readonly model: V1Model,
  ) {}

  static async load(ds: SensoriumDataset): Promise<SimulatedTruth | undefined> {
    const dir = join(ds.dir, 'meta/simulation');
    if (!existsSync(join(dir, 'params.json'))) return undefined;
    const meta = JSON.parse(readFileSync(join(dir, 'params.json'), 'utf8')) as { config: { simulator: SimulatorConfig } };
    const cfg = meta.config.simulator;
    const params = { cortex: new Float32Array(cfg.neurons * 3) } as NeuronParams;
    for (const key of NEURON_PARAM_KEYS) {
      const values = Array.from(npyNumbers(readNpy(join(dir, `${key}.npy`))));
      (params as unknown as Record<string, Float32Array | Uint8Array>)[key] = key === 'complex' ? Uint8Array.from(values) : Float32Array.from(values);
    }
    return new SimulatedTruth(cfg, params, await V1Model.create(cfg, params));
  }

  /**
   * Expected (noise-free) responses of groups of trials, averaged within each group: [groups, neurons]
   * in event units (a per-neuron scale away from the recorded units, which correlations ignore).
   */
  async expected(ds: SensoriumDataset, groups: number[][]): Promise<Float32Array> {
    const n = this.cfg.neurons;
    const [sh, sw] = ds.imageShape;
    const P = this.cfg.height * this.cfg.width;
    const out = new Float32Array(groups.length * n);
    const mu = new Float32Array(n);
    const stim = new Float32Array(P);
    for (let g = 0; g < groups.length; g++) {
      const row = out.subarray(g * n, (g + 1) * n);
      for (const i of groups[g]) {
        const t = ds.trial(i);
        stimulusContrast(resizeArea(t.image, sh, sw, this.cfg.height, this.cfg.width), stim);
        const drive = await this.model.drive(stim, 1);
        this.model.expected(drive, t.behavior ? t.behavior[2] : 0, mu);
        for (let k = 0; k < n; k++) row[k] += mu[k] / groups[g].length;
      }
    }
    return out;
  }

  /** The quadrature receptive fields on the simulation grid, [pixels, neurons] each. */
  receptiveFields(): { even: Float32Array; odd: Float32Array; complex: Uint8Array; height: number; width: number } {
    return { ...receptiveFields(this.params, this.cfg.height, this.cfg.width), complex: this.params.complex, height: this.cfg.height, width: this.cfg.width };
  }
}
