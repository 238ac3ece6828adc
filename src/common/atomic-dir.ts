import { closeSync, copyFileSync, existsSync, fsyncSync, linkSync, lstatSync, mkdirSync, openSync, readdirSync, readlinkSync, renameSync, rmSync, statSync, symlinkSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';

/**
 * Folders (bundles, exported model repositories) written so that a reader sees the old folder or
 * the new one, never a mix, whatever kills the writer: the new folder is written beside its
 * destination under a hidden temporary name, every file and folder in it is fsynced, then the old
 * folder is renamed away, the new one renamed in, and the old one removed.
 *
 * What the writer does not write itself (a training run's checkpoints inside a bundle folder, other
 * versions of an exported model) is carried over from the old folder as hard links, so replacing a
 * bundle never loses its neighbours.
 *
 * A writer killed between the two renames leaves no folder at the destination, only the renamed
 * old one: `settledDir` finds it there (read-only), and the next write of that destination removes
 * what crashed writers left behind.
 */

const TMP = 'tmp';
const OLD = 'old';

/** `.NAME.KIND-<ms>-<pid>-<n>`: hidden, beside the destination, ordered by time, owned by a process. */
const sideName = (dest: string, kind: typeof TMP | typeof OLD, n: number): string => join(dirname(dest), `.${basename(dest)}.${kind}-${Date.now()}-${process.pid}-${n}`);

interface SideFolder {
  path: string;
  kind: typeof TMP | typeof OLD;
  ms: number;
  pid: number;
}

function sideFolders(dest: string): SideFolder[] {
  const parent = dirname(dest);
  const prefix = `.${basename(dest)}.`;
  let names: string[];
  try {
    names = readdirSync(parent);
  } catch {
    return [];
  }
  const out: SideFolder[] = [];
  for (const name of names) {
    if (!name.startsWith(prefix)) continue;
    const m = /^(tmp|old)-(\d+)-(\d+)-\d+$/.exec(name.slice(prefix.length));
    if (m) out.push({ path: join(parent, name), kind: m[1] as SideFolder['kind'], ms: Number(m[2]), pid: Number(m[3]) });
  }
  return out;
}

const alive = (pid: number): boolean => {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
};

function fsyncPath(path: string): void {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch {
    return;
  }
  try {
    fsyncSync(fd);
  } catch {
    // Some filesystems refuse fsync on a folder; the rename is still atomic there.
  } finally {
    closeSync(fd);
  }
}

/** Every folder under `dir` (and, with `files`, every file), deepest first, then `dir` itself. */
function fsyncTree(dir: string, files: boolean): void {
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) fsyncTree(p, files);
    else if (files && e.isFile()) fsyncPath(p);
  }
  fsyncPath(dir);
}

let counter = 0;

/** Link (or, where links are refused, copy) every entry of `from` that `to` lacks; folders in both are merged. */
function carryOver(from: string, to: string): void {
  for (const e of readdirSync(from, { withFileTypes: true })) {
    const src = join(from, e.name);
    const dst = join(to, e.name);
    const there = lstatSync(dst, { throwIfNoEntry: false });
    if (e.isDirectory()) {
      if (!there) mkdirSync(dst);
      if (!there || there.isDirectory()) carryOver(src, dst);
    } else if (!there) {
      if (e.isSymbolicLink()) symlinkSync(readlinkSync(src), dst);
      else if (e.isFile()) {
        try {
          linkSync(src, dst);
        } catch {
          copyFileSync(src, dst);
        }
      }
    }
  }
}

/**
 * Write the folder `dest` atomically: `write` fills a fresh empty folder (it must write only there),
 * which then replaces `dest` as a whole. If `write` throws, `dest` is untouched and the temporary
 * folder is removed. Returns what `write` returned.
 */
export function writeDirAtomic<T>(destIn: string, write: (dir: string) => T): T {
  const dest = resolve(destIn);
  mkdirSync(dirname(dest), { recursive: true });
  const tmp = sideName(dest, TMP, counter++);
  mkdirSync(tmp);
  let result: T;
  try {
    result = write(tmp);
    fsyncTree(tmp, true);
    // Carried files are the old folder's own (their data is its writer's business); their new
    // folder entries are made durable with the folders.
    const current = settledDir(dest);
    if (existsSync(current)) {
      carryOver(current, tmp);
      fsyncTree(tmp, false);
    }
  } catch (e) {
    rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
  let old: string | undefined;
  if (existsSync(dest)) {
    old = sideName(dest, OLD, counter++);
    renameSync(dest, old);
  }
  try {
    renameSync(tmp, dest);
  } catch (e) {
    // Put the old folder back rather than leave nothing at the destination.
    if (old) renameSync(old, dest);
    rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
  fsyncPath(dirname(dest));
  if (old) rmSync(old, { recursive: true, force: true });
  removeLeftovers(dest);
  return result;
}

/**
 * Remove what killed writers of `dest` left beside it: temporary folders of processes that are gone,
 * and renamed-away old folders once `dest` exists again.
 */
export function removeLeftovers(destIn: string): void {
  const dest = resolve(destIn);
  const present = existsSync(dest);
  for (const s of sideFolders(dest)) {
    if (alive(s.pid) && s.pid !== process.pid) continue;
    if (s.kind === OLD && !present) continue;
    if (s.kind === TMP && s.pid === process.pid) continue;
    rmSync(s.path, { recursive: true, force: true });
  }
}

/**
 * The folder a reader of `dest` should read: `dest` itself, or, when a writer was killed between
 * its two renames, the last complete folder it renamed away (the newest such). Nothing is changed
 * on disk. Returns `dest` when neither exists (the caller reports it missing).
 */
export function settledDir(destIn: string): string {
  const dest = resolve(destIn);
  if (existsSync(dest)) return dest;
  const olds = sideFolders(dest)
    .filter((s) => s.kind === OLD && statSync(s.path, { throwIfNoEntry: false })?.isDirectory())
    .sort((a, b) => b.ms - a.ms);
  return olds[0]?.path ?? dest;
}

/** Names that are not one plain entry of a folder: empty, `.`, `..`, or holding a separator. */
export const isPlainName = (name: string): boolean => name !== '' && name !== '.' && name !== '..' && !/[/\\\0]/.test(name);
