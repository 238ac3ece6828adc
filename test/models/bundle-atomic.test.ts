import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { settledDir } from '../../src/common/atomic-dir.js';
import { CortexcastError } from '../../src/common/errors.js';
import { loadBundle, updateBundleMetrics, writeBundle } from '../../src/models/bundle.js';
import { readCheckpoint, writeCheckpoint } from '../../src/training/engine/checkpoint.js';
import { bundleInput } from '../helpers/bundle-writer.js';
import { repoRoot } from '../helpers/paths.js';

/**
 * Bundles are replaced as whole folders: a writer killed at any point leaves the destination
 * loading as the previous bundle or the new one, and files the writer does not own survive.
 */
const root = mkdtempSync(join(tmpdir(), 'cc-atomic-'));
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Start the writer child; resolves once it has begun writing. */
function startWriter(dest: string): Promise<{ kill: () => Promise<void> }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', join(repoRoot, 'test/helpers/bundle-writer.ts')], { cwd: repoRoot, env: { ...process.env, BUNDLE_WRITER_DEST: dest }, stdio: ['ignore', 'pipe', 'pipe'] });
    let err = '';
    child.stderr.on('data', (b: Buffer) => (err += b.toString()));
    child.once('exit', (code) => reject(new Error(`writer exited ${code} before writing: ${err}`)));
    child.stdout.once('data', () =>
      resolve({
        kill: () =>
          new Promise<void>((done) => {
            child.removeAllListeners('exit');
            child.once('exit', () => done());
            child.kill('SIGKILL');
          }),
      }),
    );
  });
}

describe('atomic bundle writes', () => {
  it('kill -9 at random points of repeated rewrites: the destination always loads as one complete bundle, neighbours kept', async () => {
    const dest = join(root, 'ridge');
    writeBundle(dest, bundleInput(0));
    mkdirSync(join(dest, 'run'));
    writeFileSync(join(dest, 'run', 'checkpoint.json'), '{"step": 12}');
    const names = new Set<string>();
    const sides = new Set<string>();
    for (let trial = 0; trial < 20; trial++) {
      const w = await startWriter(dest);
      await sleep(20 + Math.random() * 400);
      await w.kill();
      for (const f of readdirSync(root)) if (f !== 'ridge') sides.add(f.replace(/-\d.*/, ''));
      const b = loadBundle(dest);
      names.add(b.manifest.name);
      // The files match the manifest that names them: neurons and model bytes of one variant.
      const expected = bundleInput(b.manifest.name === 'variant-b' ? 1 : 0);
      expect(b.stdScale.length).toBe(expected.stdScale.length);
      expect(b.stdScale[0]).toBe(expected.stdScale[0]);
      expect(b.model.length).toBe(expected.model.length);
      expect(b.dir).toBe(dest);
      expect(readFileSync(join(settledDir(dest), 'run', 'checkpoint.json'), 'utf8')).toBe('{"step": 12}');
    }
    // The kills landed in different places of the write (both variants seen at least).
    expect(names.size).toBe(2);
    // The next write cleans up after killed writers.
    updateBundleMetrics(dest, { test: { ssim: 0.5 } });
    expect(readdirSync(root)).toEqual(['ridge']);
    expect(loadBundle(dest).manifest.metrics.test).toEqual({ ssim: 0.5 });
    expect(readFileSync(join(dest, 'run', 'checkpoint.json'), 'utf8')).toBe('{"step": 12}');
    console.log(`leftovers seen after kills: ${[...sides].join(', ') || 'none'}`);
  }, 180_000);

  it('a writer killed between its two renames leaves the old folder beside the destination; readers read it, the next write settles it', () => {
    const dir = mkdtempSync(join(tmpdir(), 'cc-atomic-gap-'));
    const dest = join(dir, 'b');
    writeBundle(dest, bundleInput(1));
    // What rename(dest -> old) leaves when the process dies before rename(tmp -> dest).
    const old = join(dir, `.b.old-${Date.now()}-999999-0`);
    renameSync(dest, old);
    mkdirSync(join(dir, `.b.tmp-${Date.now()}-999999-1`));
    expect(loadBundle(dest).manifest.name).toBe('variant-b');
    expect(loadBundle(dest).dir).toBe(dest);
    writeBundle(dest, bundleInput(0));
    expect(readdirSync(dir)).toEqual(['b']);
    expect(loadBundle(dest).manifest.name).toBe('variant-a');
  });

  it('manifest file names that leave the bundle folder are refused with CC_ERR_BUNDLE', () => {
    const dir = join(mkdtempSync(join(tmpdir(), 'cc-confine-')), 'b');
    writeBundle(dir, bundleInput(0));
    writeFileSync(join(dir, '..', 'outside.npy'), readFileSync(join(dir, 'std_scale.npy')));
    const good = JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8')) as { input: { stdScaleFile: string; unitIdsFile: string }; onnx: { file: string } };
    for (const [field, value] of [
      ['stdScaleFile', '../outside.npy'],
      ['unitIdsFile', '/etc/hostname'],
      ['file', 'sub/../../outside.npy'],
    ] as const) {
      const man = structuredClone(good);
      if (field === 'file') man.onnx.file = value;
      else man.input[field] = value;
      writeFileSync(join(dir, 'manifest.json'), JSON.stringify(man));
      let err: unknown;
      try {
        loadBundle(dir);
      } catch (e) {
        err = e;
      }
      expect(err, value).toBeInstanceOf(CortexcastError);
      expect((err as CortexcastError).code).toBe('CC_ERR_BUNDLE');
      expect((err as Error).message).toMatch(/leaves the bundle folder/);
    }
  });
  it('checkpoint tensor file names that leave the checkpoint folder are refused with CC_ERR_CHECKPOINT', () => {
    const dir = join(mkdtempSync(join(tmpdir(), 'cc-ckpt-')), 'ckpt');
    writeCheckpoint(dir, new Map([['w', { data: Float32Array.of(1, 2), dims: [2] }]]), { name: 'x', step: 3, seed: 1, optimizer: {}, groups: [], schedule: {}, extra: {} });
    writeFileSync(join(dir, '..', 'outside.npy'), readFileSync(join(dir, 'tensors', '0000.npy')));
    expect(Array.from(readCheckpoint(dir, 1).tensor('w').data as Float32Array)).toEqual([1, 2]);
    const meta = JSON.parse(readFileSync(join(dir, 'checkpoint.json'), 'utf8')) as { tensors: Record<string, string> };
    for (const f of ['../outside.npy', 'tensors/../../outside.npy', '/etc/hostname']) {
      meta.tensors.w = f;
      writeFileSync(join(dir, 'checkpoint.json'), JSON.stringify(meta));
      expect(() => readCheckpoint(dir, 1).tensor('w'), f).toThrow(/^CC_ERR_CHECKPOINT: .*leaves the checkpoint folder/);
    }
  });
});
