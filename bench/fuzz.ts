/**
 * `npm run bench:fuzz`: property-based fuzzing (fast-check) of a live `cortexcast serve` process on
 * every surface it exposes: gRPC StreamFrames and unary calls, the Open Inference Protocol, raw
 * HTTP/2, HTTP/1.x and WebSocket upgrades and messages (bench/fuzz/*.ts, one file per surface).
 *
 * Surfaces take turns of --runs inputs each until --minutes are spent; a turn's inputs come from
 * fast-check with a seed derived from --seed, so a run is replayed by passing the seed it printed.
 * The oracle, per input: the server process is alive (a crash is an exit), the input was answered
 * before its deadline (a hang), and every frame the server counted as received got exactly one final
 * ack, DECODED or DROPPED, on the wire and in /metrics (unaccounted). A failing input is shrunk (for
 * at most --shrink-s) and kept as test/server/fuzz-regressions/<surface>-<hash>.json, which
 * test/server/fuzz-regressions.test.ts replays; a crash is kept as it was (no shrinking against a
 * process that has to be restarted for every try). Server RSS comes from /proc/<pid>/status.
 *
 *   npm run bench:fuzz -- [--minutes 10] [--seed N] [--runs 25] [--shrink-s 20]
 *     [--surfaces grpc-stream,grpc-unary,oip,h2-raw,http,websocket] [--bundle DIR] [--no-keep]
 *
 * Exit status 1 when anything was found (crash, hang, unaccounted frame), 2 when the bench broke.
 */
import fc from 'fast-check';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import { dirname, join, relative } from 'node:path';
import { keepInput, keptInputs, SURFACES } from './fuzz/surfaces.js';
import { REPO, rssMb, startServer, trainTinyBundle, type ServerProcess } from './fuzz/server.js';
import { quiescent, sleep, until, type FrameCounters, type KeptInput, type Outcome, type Surface } from './fuzz/types.js';
import { closeRawGrpc } from './fuzz/wire.js';

const arg = (name: string, fallback: string): string => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : fallback;
};
const minutes = Number(arg('minutes', '10'));
const seed = Number(arg('seed', String((Date.now() ^ (Math.random() * 2 ** 31)) | 0)));
const runsPerTurn = Number(arg('runs', '25'));
const shrinkMs = Number(arg('shrink-s', '20')) * 1000;
const REPRODUCE_TRIES = 3;
const keep = !process.argv.includes('--no-keep');
const only = arg('surfaces', '').split(',').filter(Boolean);
const surfaces = only.length ? SURFACES.filter((s) => only.includes(s.name)) : SURFACES;
if (!Number.isFinite(minutes) || minutes <= 0 || !Number.isInteger(seed) || !surfaces.length) {
  console.error('usage: npm run bench:fuzz -- [--minutes 10] [--seed N] [--runs 25] [--shrink-s 20] [--surfaces a,b] [--bundle DIR] [--no-keep]');
  process.exit(2);
}

interface Stats {
  tried: number;
  shrinkRuns: number;
  crashes: number;
  hangs: number;
  unaccountedInputs: number;
  unaccountedFrames: number;
  harnessErrors: number;
  outcomes: Map<string, number>;
  serverErrors: number;
  kept: string[];
}
const stats = new Map<string, Stats>(surfaces.map((s) => [s.name, { tried: 0, shrinkRuns: 0, crashes: 0, hangs: 0, unaccountedInputs: 0, unaccountedFrames: 0, harnessErrors: 0, outcomes: new Map(), serverErrors: 0, kept: [] }]));
const bump = <K>(m: Map<K, number>, k: K, by = 1): void => void m.set(k, (m.get(k) ?? 0) + by);
const errorCount = (srv: ServerProcess): number => [...srv.errors.values()].reduce((a, b) => a + b, 0);
const rss = { start: NaN, peak: 0, end: NaN };
const globalChecks = { done: 0, unaccounted: 0 };
const allErrors = new Map<string, number>();
let restarts = 0;
/** Kinds of failure found so far: surface, and the symptom with its numbers left out. */
const signatures = new Set<string>();
/** Every kind of failure seen in this run: one example symptom and how many inputs showed it. */
const failureKinds = new Map<string, { surface: string; symptom: string; inputs: number }>();
const symptomOf = (o: Outcome): string => o.hang ?? `${o.unaccounted} frame(s) without exactly one final ack: ${o.note}`;
const signatureOf = (surface: string, o: Outcome): string => `${surface} ${symptomOf(o)}`.replace(/\d+/g, '#');
// Inputs kept by earlier runs: the same failure again is counted, not shrunk and kept twice.
for (const { kept } of keptInputs()) signatures.add(signatureOf(kept.surface, kept.finding === 'hang' || kept.finding === 'crash' ? { hang: kept.symptom } : { unaccounted: 1, note: kept.symptom.replace(/^\d+ frame\(s\) without exactly one final ack: /, '') }));

/** The turn's fast-check seed: derived, so one printed seed replays the whole run. */
const turnSeed = (k: number): number => (seed ^ Math.imul(k + 1, 0x9e3779b1)) | 0;

async function turn(srv: ServerProcess, surface: Surface<unknown>, k: number, endAt: number): Promise<{ crashed: boolean }> {
  const st = stats.get(surface.name)!;
  const t = srv.target;
  const slice = { failedAt: 0, stop: false, crashed: false, firstFailure: undefined as Outcome | undefined, lastFailure: undefined as Outcome | undefined, crashInput: undefined as unknown };
  const errorsBefore = errorCount(srv);
  const prop = fc.asyncProperty(surface.arbitrary(t), async (input) => {
    if (slice.stop) return true;
    const shrinking = slice.failedAt > 0;
    // Past the shrink budget, report every try as passing: fast-check keeps the smallest failure found so far.
    if (shrinking && Date.now() - slice.failedAt > shrinkMs) return true;
    if (shrinking) st.shrinkRuns++;
    else st.tried++;
    let out: Outcome;
    try {
      out = await surface.run(input, t);
    } catch (e) {
      // The harness's own failure (or a refused connection after a crash, checked next) is not the server's.
      if (!shrinking) st.harnessErrors++;
      out = { note: `harness error: ${(e as Error).message.slice(0, 80)}` };
    }
    if (!t.alive()) {
      slice.crashed = true;
      slice.stop = true;
      slice.crashInput = input;
      return true;
    }
    if (!shrinking && out.note) bump(st.outcomes, out.note.slice(0, 90));
    if (out.hang || out.unaccounted) {
      // A kind of failure kept already (by this run or an earlier one) is counted, not shrunk again: the
      // time goes to new inputs. While shrinking a new one, a known one is not a smaller example of it.
      const sig = signatureOf(surface.name, out);
      if (shrinking && signatures.has(sig) && sig !== signatureOf(surface.name, slice.firstFailure ?? {})) return true;
      const known = !shrinking && signatures.has(sig);
      if (!shrinking) {
        const kind = failureKinds.get(sig) ?? { surface: surface.name, symptom: symptomOf(out), inputs: 0 };
        kind.inputs++;
        failureKinds.set(sig, kind);
        if (out.hang) st.hangs++;
        else {
          st.unaccountedInputs++;
          st.unaccountedFrames += out.unaccounted ?? 0;
        }
      }
      if (!shrinking && !known) {
        slice.failedAt = Date.now();
        slice.firstFailure = out;
        console.log(`  [${surface.name}] ${out.hang ? `HANG: ${out.hang}` : `UNACCOUNTED ${out.unaccounted}: ${out.note}`} (shrinking)`);
      }
      if (known) {
        bump(st.outcomes, `again: ${(out.hang ?? out.note ?? '').slice(0, 80)}`);
        return true;
      }
      slice.lastFailure = out;
      return false;
    }
    return true;
  });
  const details = await fc.check(prop, { seed: turnSeed(k), numRuns: runsPerTurn, interruptAfterTimeLimit: Math.max(1000, endAt - Date.now() + shrinkMs), markInterruptAsFailure: false });
  st.serverErrors += errorCount(srv) - errorsBefore;
  const record = (kept: KeptInput, seen: Outcome[]): void => {
    // One file per kind of failure: the same symptom (numbers aside) found again adds nothing to replay.
    const names = seen.map((o) => signatureOf(kept.surface, o));
    const isNew = !names.some((n) => signatures.has(n));
    for (const n of names) signatures.add(n);
    if (!keep || !isNew) return;
    const file = keepInput(kept);
    st.kept.push(relative(REPO, file));
    console.log(`  kept ${relative(REPO, file)}`);
  };
  if (slice.crashed) {
    st.crashes++;
    const e = srv.exit!;
    // What the process said last that was not routine: a stack trace, an error or warning line.
    const said = srv.stderrTail.filter((l) => !l.includes('"level":"info"'));
    const symptom = `server exited (${e.code !== null ? `code ${e.code}` : `signal ${e.signal}`}); last stderr: ${(said.length ? said : srv.stderrTail).slice(-4).join(' | ').slice(0, 600)}`;
    console.log(`  [${surface.name}] CRASH: ${symptom}`);
    const kind = failureKinds.get(signatureOf(surface.name, { hang: symptom })) ?? { surface: surface.name, symptom: `crash: ${symptom}`, inputs: 0 };
    kind.inputs++;
    failureKinds.set(signatureOf(surface.name, { hang: symptom }), kind);
    record({ surface: surface.name, finding: 'crash', symptom, seed: turnSeed(k), shrunk: false, input: slice.crashInput }, [{ hang: symptom }]);
    return { crashed: true };
  }
  if (details.failed && details.counterexample && slice.lastFailure) {
    const f = slice.lastFailure;
    const symptom = symptomOf(f);
    // Timing decides some failures: say how often the kept input fails again, so a replay that passes is read right.
    let again = 0;
    for (let i = 0; i < REPRODUCE_TRIES && t.alive(); i++) {
      const o = await surface.run(details.counterexample[0], t).catch(() => ({}) as Outcome);
      if (o.hang || o.unaccounted) again++;
    }
    console.log(`  [${surface.name}] after ${details.numShrinks} shrinks (fails again ${again}/${REPRODUCE_TRIES}): ${symptom}`);
    record({ surface: surface.name, finding: f.hang ? 'hang' : 'unaccounted', symptom, seed: turnSeed(k), path: details.counterexamplePath ?? undefined, shrunk: details.numShrinks > 0, reproduced: `${again}/${REPRODUCE_TRIES}`, input: details.counterexample[0] }, [f, slice.firstFailure ?? f]);
  } else if (details.failed && details.errorInstance) console.log(`  [${surface.name}] fast-check: ${String(details.errorInstance).slice(0, 200)}`);
  return { crashed: false };
}

/** Between turns nothing is in flight: every frame the server received must be decoded or dropped by now. */
async function globalCheck(srv: ServerProcess, surface: string): Promise<void> {
  const off = (x: FrameCounters): number => x.received - x.decoded - x.dropped;
  let c = await quiescent(srv.target).catch(() => undefined);
  if (!c) return;
  if (off(c) !== 0)
    await until(async () => {
      c = (await srv.target.counters().catch(() => undefined)) ?? c;
      return off(c!) === 0;
    }, 5000, 100);
  globalChecks.done++;
  if (off(c) !== 0) {
    globalChecks.unaccounted = Math.max(globalChecks.unaccounted, off(c));
    console.log(`  after a ${surface} turn: /metrics received ${c.received} != decoded ${c.decoded} + dropped ${c.dropped}`);
  }
}

// Interrupted: exit through process.exit so the server child is reaped (bench/fuzz/server.ts).
for (const sig of ['SIGINT', 'SIGTERM'] as const) process.once(sig, () => process.exit(130));

async function main(): Promise<void> {
  console.log(`bench:fuzz  ${minutes} min, seed ${seed}, ${runsPerTurn} inputs per turn, surfaces ${surfaces.map((s) => s.name).join(', ')}; ${os.cpus().length} cores, Node ${process.version}, fast-check ${fc.__version}`);
  const bundleArg = arg('bundle', '');
  const t0Prep = Date.now();
  const bundle = bundleArg || trainTinyBundle();
  console.log(`bundle ${bundleArg ? bundle : '(ridge on the tiny preset, trained into a temp folder)'} ready in ${((Date.now() - t0Prep) / 1000).toFixed(1)} s`);
  const work = mkdtempSync(join(os.tmpdir(), 'cortexcast-fuzz-run-'));
  let srv = await startServer(bundle, work);
  const t = (): ServerProcess['target'] => srv.target;
  console.log(`server pid ${srv.pid}: gRPC 127.0.0.1:${t().grpcPort}, HTTP 127.0.0.1:${t().httpPort}; model ${t().model}, ${t().neurons} neurons`);
  await t().counters();
  rss.start = rssMb(srv.pid) ?? NaN;
  const sampler = setInterval(() => {
    const v = rssMb(srv.pid);
    if (v !== undefined) rss.peak = Math.max(rss.peak, v);
  }, 250);
  const t0 = Date.now();
  const endAt = t0 + minutes * 60_000;
  let lastProgress = t0;
  let k = 0;
  for (; Date.now() < endAt; k++) {
    const surface = surfaces[k % surfaces.length];
    const { crashed } = await turn(srv, surface, k, endAt);
    for (const [m, n] of srv.errors) bump(allErrors, m, n);
    srv.errors.clear();
    if (crashed) {
      restarts++;
      closeRawGrpc();
      srv = await startServer(bundle, work);
      console.log(`  restarted the server: pid ${srv.pid}`);
      continue;
    }
    await globalCheck(srv, surface.name);
    if (Date.now() - lastProgress >= 30_000) {
      lastProgress = Date.now();
      const tried = [...stats.values()].reduce((a, s) => a + s.tried, 0);
      console.log(`${((Date.now() - t0) / 1000).toFixed(0).padStart(5)} s  turns ${k + 1}  inputs ${tried}  rss ${(rssMb(srv.pid) ?? NaN).toFixed(1)} MB`);
    }
  }
  const elapsedS = (Date.now() - t0) / 1000;
  await globalCheck(srv, 'final');
  closeRawGrpc();
  // Connections closed and timers run out: what the server keeps after the load is its end figure.
  await sleep(3000);
  rss.end = rssMb(srv.pid) ?? NaN;
  clearInterval(sampler);
  for (const [m, n] of srv.errors) bump(allErrors, m, n);
  const alive = srv.target.alive();
  await srv.stop();
  rmSync(work, { recursive: true, force: true });
  if (!bundleArg) rmSync(dirname(bundle), { recursive: true, force: true });

  const pad = (s: string | number, n: number): string => String(s).padStart(n);
  console.log(`\n== fuzz report: ${elapsedS.toFixed(0)} s, ${k} turns, seed ${seed} ==`);
  console.log(`${'surface'.padEnd(12)}${pad('inputs', 8)}${pad('shrink', 8)}${pad('crashes', 9)}${pad('hangs', 7)}${pad('unacc.in', 10)}${pad('unacc.fr', 10)}${pad('srv.err', 9)}${pad('harness', 9)}`);
  for (const s of surfaces) {
    const x = stats.get(s.name)!;
    console.log(`${s.name.padEnd(12)}${pad(x.tried, 8)}${pad(x.shrinkRuns, 8)}${pad(x.crashes, 9)}${pad(x.hangs, 7)}${pad(x.unaccountedInputs, 10)}${pad(x.unaccountedFrames, 10)}${pad(x.serverErrors, 9)}${pad(x.harnessErrors, 9)}`);
  }
  console.log('(inputs: generated inputs run; shrink: extra runs while shrinking a failure; unacc.in / unacc.fr: inputs and frames without exactly one final ack; srv.err: level=error log lines the server wrote during that surface\'s turns; harness: inputs the fuzzer itself could not run)');
  for (const s of surfaces) {
    const x = stats.get(s.name)!;
    const top = [...x.outcomes].sort((a, b) => b[1] - a[1]).slice(0, 6).map(([o, n]) => `${o} x${n}`);
    console.log(`  ${s.name} outcomes: ${top.join('; ') || 'none'}`);
  }
  console.log(`/metrics accounting between turns: ${globalChecks.done} checks, largest received - decoded - dropped seen: ${globalChecks.unaccounted}`);
  if (allErrors.size) for (const [m, n] of [...allErrors].sort((a, b) => b[1] - a[1]).slice(0, 10)) console.log(`  server error log x${n}: ${m}`);
  const f1 = (v: number): string => (Number.isFinite(v) ? v.toFixed(1) : '?');
  console.log(`server RSS MB (VmRSS): start ${f1(rss.start)}, peak ${f1(rss.peak)}, end ${f1(rss.end)} (3 s after the last input)${restarts ? ` (after ${restarts} restart(s): start is the first process, end the last)` : ''}`);
  console.log(`server alive at the end: ${alive ? 'yes' : 'NO'}; restarts after crashes: ${restarts}`);
  for (const [, f] of failureKinds) console.log(`failure x${f.inputs} inputs [${f.surface}]: ${f.symptom}`);
  const kept = surfaces.flatMap((s) => stats.get(s.name)!.kept);
  if (kept.length) console.log(`kept inputs (replayed by test/server/fuzz-regressions.test.ts):\n  ${kept.join('\n  ')}`);
  const found = [...stats.values()].reduce((a, s) => a + s.crashes + s.hangs + s.unaccountedInputs, 0) + (globalChecks.unaccounted ? 1 : 0) + (alive ? 0 : 1);
  console.log(`replay: npm run bench:fuzz -- --seed ${seed} --minutes ${minutes}${only.length ? ` --surfaces ${only.join(',')}` : ''}`);
  console.log(found ? `FOUND ${found} problem(s)` : 'PASS: no crash, hang or unaccounted frame');
  process.exitCode = found ? 1 : 0;
}

await main().catch((e: Error) => {
  console.error(e);
  process.exitCode = 2;
});
process.exit(process.exitCode ?? 0);
