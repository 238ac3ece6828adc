import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync, copyFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DecoderConnection, subscribe } from '../../clients/lib/index.js';
import { replay } from '../../clients/replay/replay.js';
import { loadServerConfig } from '../../src/server/config.js';
import { CortexcastServer } from '../../src/server/server.js';
import { trainRidge } from '../../src/training/ridge/train-ridge.js';
import { repoRoot } from '../helpers/paths.js';
import { tinyDataset } from '../helpers/tiny-dataset.js';

/**
 * The shipped observability files against a real Prometheus (Debian's `prometheus`): it scrapes a
 * live cortexcast under replay traffic with the shipped scrape config and rules, and every
 * dashboard panel's expression and every rule's expression returns data through its HTTP API.
 */
const PROMETHEUS = ['/usr/bin/prometheus'].find((p) => spawnSync(p, ['--version'], { stdio: 'ignore' }).status === 0);
const deploy = join(repoRoot, 'deploy');
const neurons = 200;

const freePort = (): Promise<number> =>
  new Promise((resolve) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });

interface Panel {
  title: string;
  targets: { expr: string }[];
}

const dashboard = JSON.parse(readFileSync(join(deploy, 'grafana/dashboards/cortexcast.json'), 'utf8')) as { uid: string; panels: Panel[]; templating: { list: { name: string; type: string }[] } };

describe('Prometheus and Grafana files', () => {
  it('promtool accepts the shipped scrape config and rules', (ctx) => {
    if (spawnSync('promtool', ['--version'], { stdio: 'ignore' }).status !== 0) {
      console.warn('SKIPPED: promtool not installed (apt-get install prometheus) - deploy/prometheus not checked');
      ctx.skip();
      return;
    }
    const config = spawnSync('promtool', ['check', 'config', join(deploy, 'prometheus/prometheus.yml')], { encoding: 'utf8' });
    expect(config.status, config.stdout + config.stderr).toBe(0);
    const rules = spawnSync('promtool', ['check', 'rules', join(deploy, 'prometheus/cortexcast-rules.yml')], { encoding: 'utf8' });
    expect(rules.status, rules.stdout + rules.stderr).toBe(0);
  });

  it('the dashboard has a stable uid, a templated datasource and the panels operators need', () => {
    expect(dashboard.uid).toBe('cortexcast-live');
    expect(dashboard.templating.list.find((v) => v.name === 'datasource')?.type).toBe('datasource');
    const exprs = dashboard.panels.flatMap((p) => p.targets.map((t) => t.expr)).join('\n');
    for (const series of ['cortexcast_end_to_end_seconds_bucket', 'cortexcast_queue_wait_seconds_bucket', 'cortexcast_decode_seconds_bucket', 'cortexcast_send_seconds_bucket', 'cortexcast_frames_decoded_total', 'cortexcast_frames_dropped_total', 'cortexcast_frames_rejected_total', 'cortexcast_subscribers', 'cortexcast_queue_depth', 'cortexcast_worker_busy_ratio', 'cortexcast_model_info'])
      expect(exprs).toContain(series);
  });
});

describe.skipIf(!PROMETHEUS)('against a real Prometheus scraping a live server', () => {
  let server: CortexcastServer;
  let prom: ChildProcess;
  let api: string;
  const ac = new AbortController();

  beforeAll(async () => {
    const data = await tinyDataset({}, neurons);
    const bundle = join(mkdtempSync(join(tmpdir(), 'cc-prom-')), 'ridge');
    await trainRidge({ data, out: bundle, quiet: true, log: () => undefined });
    server = await new CortexcastServer(loadServerConfig({ flags: { grpcPort: 0, httpPort: 0, models: [{ name: 'ridge', path: bundle }] } }), () => undefined).start();
    // Traffic with every outcome the panels show: decoded, superseded, rejected, unary, a clock problem, a subscriber.
    void replay({ data, server: `127.0.0.1:${server.grpcPort}`, model: 'ridge', rate: 30, loop: true, streamId: 'prom', signal: ac.signal });
    const sub = subscribe(`http://127.0.0.1:${server.httpPort}`);
    ac.signal.addEventListener('abort', () => sub.close());
    const conn = new DecoderConnection(`127.0.0.1:${server.grpcPort}`);
    const s = conn.openStream();
    for (let i = 1; i <= 100; i++) s.send({ streamId: 'burst', model: 'ridge', sequence: i, responses: new Float32Array(neurons).fill(i % 3) });
    s.send({ streamId: 'burst', model: 'ridge', sequence: 101, responses: new Float32Array(3) });
    s.send({ streamId: 'burst', model: 'ridge', sequence: 102, responses: new Float32Array(neurons), acquiredAtUs: 5 });
    s.end();
    await s.done;
    await conn.decode('ridge', new Float32Array(neurons));
    conn.close();

    const dir = mkdtempSync(join(tmpdir(), 'cc-promcfg-'));
    const port = await freePort();
    const shipped = readFileSync(join(deploy, 'prometheus/prometheus.yml'), 'utf8');
    expect(shipped).toContain("'127.0.0.1:8080'");
    writeFileSync(join(dir, 'prometheus.yml'), shipped.replace("'127.0.0.1:8080'", `'127.0.0.1:${server.httpPort}'`).replace(/scrape_interval: \S+/, 'scrape_interval: 1s').replace(/evaluation_interval: \S+/, 'evaluation_interval: 1s'));
    copyFileSync(join(deploy, 'prometheus/cortexcast-rules.yml'), join(dir, 'cortexcast-rules.yml'));
    api = `http://127.0.0.1:${port}/api/v1`;
    prom = spawn(PROMETHEUS!, [`--config.file=${join(dir, 'prometheus.yml')}`, `--storage.tsdb.path=${join(dir, 'tsdb')}`, `--web.listen-address=127.0.0.1:${port}`], { stdio: 'ignore' });
    // Ready, the target scraped a few times, and the rules evaluated.
    const t0 = Date.now();
    for (;;) {
      const ok = await fetch(`${api}/query?query=count_over_time(up{job="cortexcast"}[1m])`)
        .then((r) => r.json() as Promise<{ data?: { result: { value: [number, string] }[] } }>)
        .then((j) => Number(j.data?.result[0]?.value[1] ?? 0) >= 6)
        .catch(() => false);
      if (ok) break;
      if (Date.now() - t0 > 60_000) throw new Error('Prometheus did not scrape cortexcast within 60 s');
      await new Promise((r) => setTimeout(r, 500));
    }
  }, 120_000);

  afterAll(async () => {
    ac.abort();
    prom?.kill('SIGTERM');
    await server?.close();
  });

  const query = async (expr: string): Promise<unknown[]> => {
    const r = (await (await fetch(`${api}/query?query=${encodeURIComponent(expr)}`)).json()) as { status: string; error?: string; data: { result: unknown[] } };
    if (r.status !== 'success') throw new Error(`${expr}: ${r.error}`);
    return r.data.result;
  };
  // Grafana's variables as a dashboard with "All" models selected would send them.
  const grafana = (expr: string): string => expr.replaceAll('$model', '.*').replaceAll('$__rate_interval', '30s');
  // An alert's expression without its threshold: the series it compares must exist.
  const lhs = (expr: string): string => expr.replace(/\s*(==|!=|>=|<=|>|<)\s*[\d.]+/g, '');

  it('every dashboard panel expression returns data', async () => {
    const empty: string[] = [];
    for (const p of dashboard.panels) for (const t of p.targets) if ((await query(grafana(t.expr))).length === 0) empty.push(`${p.title}: ${t.expr}`);
    expect(empty).toEqual([]);
  });

  it('every recording rule and every alert expression returns data', async () => {
    const rules = (await (await fetch(`${api}/rules`)).json()) as { data: { groups: { rules: { type: string; name: string; query: string; health: string }[] }[] } };
    const all = rules.data.groups.flatMap((g) => g.rules);
    expect(all.length).toBe(12);
    const empty: string[] = [];
    for (const r of all) {
      expect(r.health, r.name).toBe('ok');
      const expr = r.type === 'recording' ? r.name : lhs(r.query);
      if ((await query(expr)).length === 0) empty.push(`${r.name}: ${expr}`);
    }
    expect(empty).toEqual([]);
  });
});

if (!PROMETHEUS) console.warn('SKIPPED: Prometheus integration test - prometheus is not installed (apt-get install prometheus)');
