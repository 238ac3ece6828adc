/**
 * HDF5 through h5wasm: the HDF5 C library compiled to WebAssembly, so reading and writing NWB files
 * needs no native build, runs in Node and in browsers, and is the maintained reference implementation
 * rather than a parser of our own. The module is made ready once, at import (top-level await), so the
 * readers and writers built on it stay synchronous like the rest of src/datasets.
 */
import { closeSync, existsSync, fstatSync, openSync, readSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type * as H5 from 'h5wasm/node';

/**
 * h5wasm is loaded with require() (Node loads ES modules that way since 20.19), not import: the
 * command line's TypeScript loader hooks import() and would rewrite h5wasm's 4 MB module, with the
 * WebAssembly inside it, on every start - tens of seconds and hundreds of MB.
 */
function h5wasmPath(): string {
  for (let dir = dirname(fileURLToPath(import.meta.url)); ; dir = dirname(dir)) {
    const p = join(dir, 'node_modules/h5wasm/dist/node/hdf5_hl.js');
    if (existsSync(p)) return p;
    if (dirname(dir) === dir) throw new Error('h5wasm is not installed (npm install)');
  }
}
const h5 = createRequire(import.meta.url)(h5wasmPath()) as typeof H5;
await h5.ready;

export const { Dataset, Group, Reference } = h5;
export type Dataset = H5.Dataset;
export type Group = H5.Group;
export type Reference = H5.Reference;
export type File = H5.File;

const SIGNATURE = Buffer.from([0x89, 0x48, 0x44, 0x46, 0x0d, 0x0a, 0x1a, 0x0a]);

/** Whether a file carries the HDF5 signature (at 0, 512, 1024, ... where a user block precedes it). */
export function isHdf5(path: string): boolean {
  const fd = openSync(path, 'r');
  try {
    const size = fstatSync(fd).size;
    const buf = Buffer.alloc(8);
    for (let at = 0; at + 8 <= size; at = at ? at * 2 : 512) {
      readSync(fd, buf, 0, 8, at);
      if (buf.equals(SIGNATURE)) return true;
    }
    return false;
  } finally {
    closeSync(fd);
  }
}

export function openH5(path: string, mode: 'r' | 'w'): File {
  return new h5.File(path, mode);
}

/** A text or numeric attribute as one string ('' when absent); arrays of one element are unwrapped. */
export function attrText(obj: Group | Dataset, name: string): string {
  if (!Object.prototype.hasOwnProperty.call(obj.attrs, name)) return '';
  const v = obj.get_attribute(name, false);
  const one = Array.isArray(v) || ArrayBuffer.isView(v) ? (v as ArrayLike<unknown>)[0] : v;
  return one === undefined || one === null ? '' : String(one);
}

export function attrNumber(obj: Group | Dataset, name: string): number | undefined {
  const s = attrText(obj, name);
  if (s === '') return undefined;
  const n = Number(s);
  return Number.isFinite(n) ? n : undefined;
}

/** The object reference an attribute holds (DynamicTableRegion.table, VectorIndex.target), if any. */
export function attrReference(obj: Group | Dataset, name: string): Reference | undefined {
  if (!Object.prototype.hasOwnProperty.call(obj.attrs, name)) return undefined;
  const v = obj.get_attribute(name, false);
  const one = Array.isArray(v) ? v[0] : v;
  return one instanceof Reference ? one : undefined;
}

export const neurodataType = (obj: Group | Dataset): string => attrText(obj, 'neurodata_type');

/** Every group below `root` (depth-first, at most `maxDepth` levels), with its absolute path. */
export function* groupsBelow(root: Group, maxDepth = 6): Generator<Group> {
  if (maxDepth <= 0) return;
  for (const name of root.keys()) {
    const child = root.get(name);
    if (child instanceof Group) {
      yield child;
      yield* groupsBelow(child, maxDepth - 1);
    }
  }
}

/** A dataset's values as float64, whatever its numeric type (integers, float32, 64-bit integers). */
export function numbers(ds: Dataset): Float64Array {
  const v = ds.value;
  if (v instanceof Float64Array) return v;
  if (v instanceof BigInt64Array || v instanceof BigUint64Array) return Float64Array.from(v, Number);
  if (ArrayBuffer.isView(v)) return new Float64Array(v as unknown as ArrayLike<number>);
  if (Array.isArray(v)) return Float64Array.from(v as unknown[], Number);
  return Float64Array.of(Number(v));
}

/** A dataset's numeric values as read (no copy), 64-bit integers converted to numbers. */
export function numericValues(ds: Dataset): ArrayLike<number> {
  const v = ds.value;
  if (v instanceof BigInt64Array || v instanceof BigUint64Array) return Float64Array.from(v, Number);
  if (ArrayBuffer.isView(v)) return v as unknown as ArrayLike<number>;
  return numbers(ds);
}

/** Text values of a dataset (one string or an array of them). */
export function texts(ds: Dataset): string[] {
  const v = ds.value;
  if (Array.isArray(v)) return v.map(String);
  if (ArrayBuffer.isView(v)) return Array.from(v as unknown as ArrayLike<number>, String);
  return [String(v)];
}
