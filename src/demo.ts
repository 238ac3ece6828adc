import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, openSync, readdirSync, readFileSync, renameSync, rmSync, statSync } from 'node:fs';
import { setPriority } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { replay } from '../clients/replay/replay.js';
import { loadBundle, updateBundleMetrics, type DecoderBundle } from './models/bundle.js';
import { loadServerConfig } from './server/config.js';
import { CortexcastServer } from './server/server.js';
import { synthesize, SYNTH_PRESETS } from './training/data/synth.js';
import { evaluateBundle } from './training/eval/evaluate.js';
import { trainRidge } from './training/ridge/train-ridge.js';

/**
 * `npm start`: the live demo. Makes (once, then cached) the small simulated dataset and a ridge
 * decoder, serves the best bundle present in the cache (lowest validation SSIML), replays the test tier at
 * 30 Hz in a loop, and prints the viewer and metrics URLs. Until the cache holds a finished CNN it
 * also trains one in the background (cortexcast's recipe, 4-minute budget, one thread, low priority),
 * which the next start serves if its validation SSIML beats ridge's. Ctrl-C stops everything cleanly
 * (an interrupted CNN resumes on the next start).
 */
export async function runDemo(o: { cacheDir: string; httpPort: number; grpcPort: number; seconds?: number; trainCnn?: boolean }): Promise<void> {
  const dir = resolve(o.cacheDir);
  const data = join(dir, 'synth-small');
  const ridge = join(dir, 'ridge');
  if (!existsSync(join(data, 'meta/trials/tiers.npy'))) {
    console.log(`demo: simulating V1 responses to natural images (once) -> ${data}`);
    await synthesize(data, SYNTH_PRESETS.small, { force: true });
  }
  if (!existsSync(join(ridge, 'manifest.json'))) {
    console.log(`demo: fitting the ridge decoder (once) -> ${ridge}`);
    await trainRidge({ data, out: ridge });
    const r = await evaluateBundle(ridge, data, { fid: 0 });
    updateBundleMetrics(ridge, { test: { ...r.metrics } });
  }
  const best = bestBundle(dir);
  const name = best.manifest.kind;
  const server = await new CortexcastServer(
    loadServerConfig({ flags: { httpPort: o.httpPort, grpcPort: o.grpcPort, models: [{ name, path: best.dir }], threads: 2, logLevel: 'warn' } }),
  ).start();
  const viewer = `http://127.0.0.1:${server.httpPort}/?model=${name}`;
  console.log(`\ncortexcast demo: decoding simulated V1 activity live with '${name}' (${best.manifest.input.neurons} neurons, ${best.dir})`);
  console.log(`  viewer   ${viewer}`);
  console.log(`  metrics  http://127.0.0.1:${server.httpPort}/metrics`);
  console.log(`  gRPC     127.0.0.1:${server.grpcPort}   (Ctrl-C stops)\n`);
  const training = o.trainCnn === false ? undefined : trainCnnInBackground(dir, data);
  const ac = new AbortController();
  const stop = (): void => ac.abort();
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  if (o.seconds) setTimeout(stop, o.seconds * 1000).unref();
  const stats = await replay({
    data,
    server: `127.0.0.1:${server.grpcPort}`,
    model: name,
    rate: 30,
    loop: true,
    streamId: 'demo-rig',
    signal: ac.signal,
    onProgress: (s) => process.stderr.write(`\rreplay: ${s.sent} frames sent, ${s.decoded} decoded, ${s.dropped} dropped, jitter p99 ${s.jitterP99.toFixed(1)} ms   `),
  });
  process.stderr.write('\n');
  console.log(`demo: stopping (${stats.sent} frames sent, ${stats.decoded} decoded)`);
  if (training?.stop()) console.log('demo: the background CNN training stopped; the next start resumes it');
  await server.close();
}

/**
 * `cortexcast train cnn` on the demo data as a child process (log: <cache>/cnn-training.log), unless
 * the cache holds a finished one (run/stop.json). In the background because it takes minutes, which
 * the first start should not wait for, and the ridge demo needs little of the CPU meanwhile. A cached
 * run that an older cortexcast started under other settings cannot resume (CC_ERR_CHECKPOINT): it is
 * moved to cnn.previous-settings and the training starts over.
 */
function trainCnnInBackground(dir: string, data: string): { stop(): boolean } | undefined {
  const out = join(dir, 'cnn');
  if (existsSync(join(out, 'run', 'stop.json'))) return undefined;
  const logFile = join(dir, 'cnn-training.log');
  const cli = fileURLToPath(new URL('../bin/cortexcast.js', import.meta.url));
  let child: ChildProcess | undefined;
  const start = (again: boolean): void => {
    const logStart = existsSync(logFile) ? statSync(logFile).size : 0;
    const fd = openSync(logFile, 'a');
    child = spawn(process.execPath, [cli, 'train', 'cnn', '--data', data, '--out', out, '--budget', '4m', '--resume'], {
      stdio: ['ignore', fd, fd],
      env: { ...process.env, CORTEXCAST_THREADS: '1' },
    });
    closeSync(fd);
    try {
      if (child.pid) setPriority(child.pid, 10);
    } catch {
      // Lower priority is a courtesy to the live demo; the training runs without it.
    }
    child.on('exit', (code, signal) => {
      if (signal) return;
      if (code !== 0) {
        const said = readFileSync(logFile, 'utf8').slice(logStart);
        if (!again && said.includes('CC_ERR_CHECKPOINT') && said.includes('other settings')) {
          rmSync(`${out}.previous-settings`, { recursive: true, force: true });
          renameSync(out, `${out}.previous-settings`);
          console.log(`\ndemo: the cached CNN run was started under other settings; it is kept in ${out}.previous-settings and the training starts over`);
          return start(true);
        }
        return void console.log(`\ndemo: the background CNN training failed (exit ${code}); see ${logFile}`);
      }
      const ssiml = (d: string): string => loadBundle(d).manifest.metrics.validation?.ssiml?.toFixed(3) ?? '?';
      console.log(`\ndemo: the CNN decoder is trained: validation SSIML ${ssiml(out)} (ridge ${ssiml(join(dir, 'ridge'))}); the next start serves the better one`);
    });
  };
  start(false);
  console.log(`demo: training a CNN decoder in the background (4-min budget, log ${logFile}); the next start serves it if it beats ridge on validation`);
  return { stop: () => (child && child.exitCode === null && child.signalCode === null ? child.kill('SIGTERM') : false) };
}

/**
 * The bundle in the cache with the lowest validation SSIML (ridge when nothing better exists): the
 * choice is made on the validation tier, never the test tier.
 */
function bestBundle(dir: string): DecoderBundle {
  const found: DecoderBundle[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    if (!e.isDirectory() || !existsSync(join(dir, e.name, 'manifest.json'))) continue;
    try {
      found.push(loadBundle(join(dir, e.name)));
    } catch {
      // A broken bundle in the cache is skipped; the demo still runs.
    }
  }
  if (!found.length) throw new Error(`no bundle in ${dir}`);
  const score = (b: DecoderBundle): number => b.manifest.metrics.validation?.ssiml ?? 1;
  return found.sort((a, b) => score(a) - score(b))[0];
}
