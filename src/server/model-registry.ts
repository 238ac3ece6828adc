import { ccError, quoted } from '../common/errors.js';
import { assertDecoder, loadBundle, type DecoderBundle } from '../models/bundle.js';
import type { ExecutionProvider } from '../models/ort.js';
import type { ModelConfig, ServerConfig } from './config.js';
import { resolveWindow, type ResolvedWindow } from './response-window.js';
import { modelsInDir } from './models-dir.js';
import { WorkerPool } from './worker-pool.js';

/** A model ready to serve: its bundle, its worker pool, and facts for clients. */
export interface ServedModel {
  name: string;
  config: ModelConfig;
  bundle: DecoderBundle;
  pool: WorkerPool;
  neurons: number;
  width: number;
  height: number;
  provider: ExecutionProvider;
  /** Iterative decoders: optimisation steps per frame (model config, else server config, else the bundle's). */
  steps?: number;
  /** Frames averaged per decode and their lag (model config, else the bundle's manifest, else one frame). */
  responseWindow: ResolvedWindow;
}

/** The facts clients see about a served model (ListModels/GetModel, /api/models, the viewer's hello). */
export interface ModelFacts {
  name: string;
  kind: string;
  neurons: number;
  width: number;
  height: number;
  provider: ExecutionProvider;
  workers: number;
  /** Recorded metrics flattened as `<tier>.<metric>`, e.g. `test.ssiml`. */
  metrics: Record<string, number>;
  /** Iterative decoders: optimisation steps per frame. */
  steps?: number;
  /** The response window streams are decoded with (see the continuous-streams guide). */
  responseWindow: ResolvedWindow;
  /**
   * Live-calibrated bundles: held-out SSIM of the served decoder at each refit so far (the newest
   * 200), by train frames in its fit - the calibration's learning curve.
   */
  learningCurve?: { frames: number; seconds: number; ssim: number }[];
}

/** The learning curve `cortexcast calibrate` records in a bundle's manifest, as far as it is well-formed. */
function learningCurveOf(config: Record<string, unknown> | undefined): ModelFacts['learningCurve'] {
  const raw = config?.learningCurve;
  if (!Array.isArray(raw)) return undefined;
  const points = raw.slice(-200).flatMap((p: unknown) => {
    if (typeof p !== 'object' || p === null) return [];
    const q = p as { frames?: unknown; seconds?: unknown; ssim?: unknown; refined?: { ssim?: unknown } };
    const ssim = typeof q.refined?.ssim === 'number' ? q.refined.ssim : q.ssim;
    return typeof q.frames === 'number' && typeof q.seconds === 'number' && typeof ssim === 'number' && Number.isFinite(ssim) ? [{ frames: q.frames, seconds: q.seconds, ssim }] : [];
  });
  return points.length ? points : undefined;
}

export function modelFacts(m: ServedModel): ModelFacts {
  const metrics: Record<string, number> = {};
  for (const [tier, vals] of Object.entries(m.bundle.manifest.metrics)) for (const [k, v] of Object.entries(vals ?? {})) metrics[`${tier}.${k}`] = v;
  const learningCurve = learningCurveOf(m.bundle.manifest.training?.config as Record<string, unknown> | undefined);
  return { name: m.name, kind: m.bundle.manifest.kind, neurons: m.neurons, width: m.width, height: m.height, provider: m.provider, workers: m.pool.size, metrics, ...(m.steps ? { steps: m.steps } : {}), responseWindow: m.responseWindow, ...(learningCurve && { learningCurve }) };
}

export async function loadModel(cfg: ServerConfig, m: ModelConfig): Promise<ServedModel> {
  const bundle = loadBundle(m.path);
  const man = bundle.manifest;
  assertDecoder(man, bundle.dir);
  const steps = man.iterative ? (m.steps ?? cfg.iterativeSteps ?? man.iterative.steps) : undefined;
  const responseWindow = resolveWindow(m.responseWindow, man.responseWindow, bundle.dir);
  const pool = await WorkerPool.start(
    {
      model: bundle.model,
      manifest: { kind: man.kind, onnx: man.onnx, input: man.input, output: man.output, iterative: man.iterative },
      steps,
      providers: [...(m.providers ?? cfg.providers)],
      threads: m.threads ?? cfg.threads,
      nice: cfg.decodeNice,
    },
    m.workers ?? cfg.workers,
    { ms: cfg.limits.warmupTimeoutMs, model: m.name! },
  );
  return { name: m.name!, config: m, bundle, pool, neurons: man.input.neurons, width: man.output.width, height: man.output.height, provider: pool.provider, steps, responseWindow };
}

/**
 * The set of served models. Reloading builds a complete new set first and swaps it in at once, so
 * streams keep going (they look models up by name per frame) and a bad bundle leaves the old set serving.
 */
export interface RegistryEvents {
  /** A model's workers changed: one freed up or died, or a reload swapped in a new pool. */
  poolChanged(model: string): void;
  /** A worker thread died while serving. */
  workerDied(model: string, e: Error): void;
}

export class ModelRegistry {
  private models = new Map<string, ServedModel>();

  constructor(
    private readonly cfg: ServerConfig,
    private readonly events: RegistryEvents = { poolChanged: () => undefined, workerDied: () => undefined },
  ) {}

  async loadAll(): Promise<void> {
    const fresh = new Map<string, ServedModel>();
    try {
      for (const m of [...this.cfg.models, ...modelsInDir(this.cfg)]) fresh.set(m.name!, await loadModel(this.cfg, m));
    } catch (e) {
      await Promise.all([...fresh.values()].map((s) => s.pool.close(0)));
      throw e;
    }
    const old = this.models;
    this.models = fresh;
    for (const m of fresh.values()) {
      m.pool.onChange = () => this.events.poolChanged(m.name);
      m.pool.onWorkerDeath = (e) => this.events.workerDied(m.name, e);
    }
    for (const m of fresh.values()) this.events.poolChanged(m.name);
    // Old pools finish what they are running, then stop.
    await Promise.all([...old.values()].map((s) => s.pool.close(this.cfg.shutdownGraceMs)));
  }

  get(name: string): ServedModel {
    const m = this.models.get(name);
    if (!m) throw ccError('CC_ERR_UNKNOWN_MODEL', quoted(name), [...this.models.keys()].join(', ') || 'none');
    return m;
  }

  has(name: string): boolean {
    return this.models.has(name);
  }

  all(): ServedModel[] {
    return [...this.models.values()];
  }

  /** Models that cannot decode: every inference worker died (a reload brings them back). */
  broken(): string[] {
    return this.all()
      .filter((m) => m.pool.alive === 0)
      .map((m) => m.name);
  }

  async close(deadlineMs: number): Promise<void> {
    await Promise.all(this.all().map((m) => m.pool.close(deadlineMs)));
  }
}
