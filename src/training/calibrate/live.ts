import { createServer, type Server } from 'node:http';
import client from 'prom-client';
import { ccError } from '../../common/errors.js';
import { Calibrator, type CalibratorOptions, type RefitResult } from './calibrator.js';
import { ReloadClient, subscribeResponses, type FeedFrame, type FeedSubscription } from './server-link.js';
import { resizeGrey, type StimulusSet } from './stimuli.js';

export interface LiveOptions extends CalibratorOptions {
  /** HTTP address of the server (response feed). */
  server: string;
  /** gRPC address of the server (ReloadModels). */
  grpc: string;
  token: string;
  /** Token for ReloadModels when the server asks for another one there. */
  adminToken?: string;
  /** Seconds between refits (a refit starts when frames came since the last and the previous one is done). */
  everySeconds: number;
  stimuli?: StimulusSet;
  /** Only frames of this stream / sent to this model (default: the calibrated model's name; '*' for all). */
  stream?: string;
  model?: string;
  /** Serve Prometheus metrics of the calibration on 127.0.0.1:<port> (0: off). */
  metricsPort?: number;
  /** Called after each bundle serves. */
  onServed?: (r: ServedRefit) => void;
  signal?: AbortSignal;
}

export interface ServedRefit extends RefitResult {
  /** Wall seconds from the newest frame of the fit reaching calibrate to the server serving the bundle. */
  toServingSeconds: number;
  reloadSeconds: number;
}

/** Prometheus series of a calibration, on its own registry (calibrate is its own process). */
export class CalibrationMetrics {
  readonly registry = new client.Registry();
  readonly frames = new client.Counter({ name: 'cortexcast_calibration_frames_total', help: 'Frames taken by the calibration, by use', labelNames: ['use'], registers: [this.registry] });
  readonly refits = new client.Counter({ name: 'cortexcast_calibration_refits_total', help: 'Refits by outcome: served, deferred (the server spaces reloads; a later try serves it or a newer one), failed', labelNames: ['outcome'], registers: [this.registry] });
  readonly refitSeconds = new client.Histogram({ name: 'cortexcast_calibration_refit_seconds', help: 'Solve, alpha choice, scoring and bundle write of one refit', buckets: [0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64], registers: [this.registry] });
  readonly toServing = new client.Histogram({ name: 'cortexcast_calibration_to_serving_seconds', help: "From a refit's newest frame to the server serving its bundle", buckets: [0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, 128], registers: [this.registry] });
  readonly heldOutSsim = new client.Gauge({ name: 'cortexcast_calibration_heldout_ssim', help: 'Held-out SSIM of the bundle last served', registers: [this.registry] });
  readonly trainFrames = new client.Gauge({ name: 'cortexcast_calibration_train_frames', help: 'Train frames in the statistics of the bundle last served', registers: [this.registry] });
  readonly skippedByServer = new client.Counter({ name: 'cortexcast_calibration_feed_skipped_total', help: 'Frames the server did not send to calibrate because it read too slowly', registers: [this.registry] });
}

/**
 * `cortexcast calibrate --server`: subscribe to the server's response feed, keep the statistics up to
 * date, refit every `everySeconds`, write the bundle into the server's models folder and reload it.
 * Frames go on being decoded by the previous bundle while a refit runs and while the server loads
 * the new one (its reload swaps the new model in only once it is ready). Runs until `signal` aborts.
 */
export async function runLiveCalibration(o: LiveOptions): Promise<{ calibrator: Calibrator; served: ServedRefit[]; metrics: CalibrationMetrics }> {
  const log = o.log ?? ((s: string) => process.stderr.write(s + '\n'));
  const cal = new Calibrator({ ...o, log });
  const metrics = new CalibrationMetrics();
  const reloader = new ReloadClient(o.grpc, o.adminToken ?? o.token);
  const served: ServedRefit[] = [];
  let lastArrival = 0;
  let t0: number | undefined;
  const onFrame = (f: FeedFrame): void => {
    if (f.skippedBefore) metrics.skippedByServer.inc(f.skippedBefore - (lastSkipped.get(f.stream) ?? 0));
    lastSkipped.set(f.stream, f.skippedBefore);
    const image = f.imageId !== undefined ? o.stimuli?.get(f.imageId) : undefined;
    const shown = image ?? (f.stimulus ? resizeGrey({ pixels: f.stimulus.pixels, height: f.stimulus.height, width: f.stimulus.width }, o.height, o.width) : undefined);
    if (!shown) {
      cal.skipped++;
      metrics.frames.inc({ use: 'no_stimulus' });
      return;
    }
    const ms = f.acquired ?? f.ingested;
    t0 ??= ms;
    try {
      metrics.frames.inc({ use: cal.add({ raw: Float32Array.from(f.responses), image: shown, t: (ms - t0) / 1000, imageId: f.imageId, unitIds: f.unitIds }) });
      lastArrival = Date.now();
    } catch (e) {
      metrics.frames.inc({ use: 'invalid' });
      log((e as Error).message);
    }
  };
  const lastSkipped = new Map<string, number>();
  await cal.warm();
  // The first subscription must succeed (a wrong token or address is the user's to fix); a feed
  // lost later (server restart) is subscribed again every few seconds until calibrate stops.
  let feed: FeedSubscription | undefined;
  const subscribe = (): Promise<FeedSubscription> =>
    subscribeResponses(o.server, {
      token: o.token,
      stream: o.stream,
      // Frames sent to the model being calibrated, unless told otherwise: other animals' frames would be another unit set.
      model: o.model ?? o.name,
      stimulus: !o.stimuli,
      onFrame,
      onClose: (why) => {
        if (o.signal?.aborted) return;
        log(`calibrate: the response feed closed (${why}); subscribing again`);
        const retry = (): void => {
          if (o.signal?.aborted) return;
          subscribe().then(
            (f) => ((feed = f), log('calibrate: subscribed again')),
            () => setTimeout(retry, 2000).unref(),
          );
        };
        setTimeout(retry, 2000).unref();
      },
    });
  feed = await subscribe();
  log(`calibrate: subscribed to ${o.server}/ws/responses; writing ${o.modelsDir}/${o.name} every ${o.everySeconds} s`);
  const http = o.metricsPort ? await serveMetrics(metrics, o.metricsPort) : undefined;
  /** The newest bundle written and not yet live (its reload failed or was deferred). */
  let unserved: { r: RefitResult; newestArrival: number } | undefined;
  try {
    while (!o.signal?.aborted) {
      await sleep(o.everySeconds * 1000, o.signal);
      if (o.signal?.aborted) continue;
      if (cal.pending > 0) {
        const newestArrival = lastArrival;
        try {
          const r = await cal.refit();
          if (r) {
            metrics.refitSeconds.observe(r.fitSeconds);
            unserved = { r, newestArrival };
          }
        } catch (e) {
          metrics.refits.inc({ outcome: 'failed' });
          log(`calibrate: refit failed: ${(e as Error).message}`);
          continue;
        }
      }
      if (!unserved) continue;
      const { r, newestArrival } = unserved;
      const tr = Date.now();
      try {
        const models = await reloader.reload();
        const m = models.find((x) => x.name === r.name);
        if (!m || m.neurons !== r.neurons) throw ccError('CC_ERR_CALIBRATION', `after the reload the server does not serve ${r.name} with ${r.neurons} neurons: is ${o.modelsDir} its --models-dir?`);
      } catch (e) {
        // The server spaces reloads (limits.minReloadIntervalMs): this bundle, or a newer one, goes live at a later try.
        const deferred = /CC_ERR_RELOAD_RATE/.test((e as Error).message);
        metrics.refits.inc({ outcome: deferred ? 'deferred' : 'failed' });
        if (!deferred) log(`calibrate: ${(e as Error).message}`);
        continue;
      }
      unserved = undefined;
      const s: ServedRefit = { ...r, reloadSeconds: (Date.now() - tr) / 1000, toServingSeconds: (Date.now() - newestArrival) / 1000 };
      served.push(s);
      metrics.refits.inc({ outcome: 'served' });
      metrics.toServing.observe(s.toServingSeconds);
      metrics.trainFrames.set(r.frames);
      const ssim = r.point.refined?.ssim ?? r.point.ssim;
      if (Number.isFinite(ssim)) metrics.heldOutSsim.set(ssim);
      log(`calibrate: ${r.name} (${r.kind}, ${r.neurons} units) serving ${s.toServingSeconds.toFixed(2)} s after its newest frame (reload ${s.reloadSeconds.toFixed(2)} s)`);
      o.onServed?.(s);
    }
  } finally {
    feed?.close();
    reloader.close();
    http?.close();
  }
  return { calibrator: cal, served, metrics };
}

const sleep = (ms: number, signal?: AbortSignal): Promise<void> =>
  new Promise((resolve) => {
    const done = (): void => {
      clearTimeout(t);
      signal?.removeEventListener('abort', done);
      resolve();
    };
    const t = setTimeout(done, ms);
    signal?.addEventListener('abort', done, { once: true });
  });

function serveMetrics(m: CalibrationMetrics, port: number): Promise<Server> {
  const server = createServer((req, res) => {
    if (req.url !== '/metrics') return void res.writeHead(404).end();
    void m.registry.metrics().then((body) => res.writeHead(200, { 'content-type': m.registry.contentType }).end(body));
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => resolve(server));
  });
}
