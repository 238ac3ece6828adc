import { closeSync, openSync, readFileSync, readSync, fstatSync, writeFileSync } from 'node:fs';
import { ccError } from './errors.js';

/**
 * NumPy .npy files (format versions 1-3), read and written here rather than through npyjs: we need
 * writing, header-only reads for validation, and errors that name the file and what is wrong
 * (truncation, unsupported dtype), which npyjs does not give.
 */
export type NpyDtype = 'float32' | 'float64' | 'uint8' | 'int64' | 'int32' | 'int16' | 'uint16' | 'bool' | 'unicode';

export type NpyData = Float32Array | Float64Array | Uint8Array | BigInt64Array | Int32Array | Int16Array | Uint16Array | string[];

export interface NpyArray {
  dtype: NpyDtype;
  shape: number[];
  data: NpyData;
}

const DESCR: Record<string, { dtype: NpyDtype; size: number }> = {
  '<f4': { dtype: 'float32', size: 4 },
  '<f8': { dtype: 'float64', size: 8 },
  '|u1': { dtype: 'uint8', size: 1 },
  '<u1': { dtype: 'uint8', size: 1 },
  '<i8': { dtype: 'int64', size: 8 },
  '<i4': { dtype: 'int32', size: 4 },
  '<i2': { dtype: 'int16', size: 2 },
  '<u2': { dtype: 'uint16', size: 2 },
  '|b1': { dtype: 'bool', size: 1 },
};

export interface NpyHeader {
  dtype: NpyDtype;
  shape: number[];
  /** Bytes per element (for unicode: 4 x characters). */
  itemSize: number;
  dataOffset: number;
}

function parseHeader(buf: Buffer, file: string): NpyHeader {
  if (buf.length < 10 || buf[0] !== 0x93 || buf.toString('latin1', 1, 6) !== 'NUMPY') throw ccError('CC_ERR_NPY_FORMAT', `${file} has no NUMPY magic`);
  const major = buf[6];
  const lenBytes = major === 1 ? 2 : 4;
  if (buf.length < 8 + lenBytes) throw ccError('CC_ERR_NPY_FORMAT', `${file} header is cut short`);
  const hlen = major === 1 ? buf.readUInt16LE(8) : buf.readUInt32LE(8);
  const start = 8 + lenBytes;
  if (buf.length < start + hlen) throw ccError('CC_ERR_NPY_FORMAT', `${file} header is cut short`);
  const header = buf.toString(major === 3 ? 'utf8' : 'latin1', start, start + hlen);
  const descr = /'descr':\s*'([^']+)'/.exec(header)?.[1];
  const fortran = /'fortran_order':\s*(True|False)/.exec(header)?.[1];
  const shapeText = /'shape':\s*\(([^)]*)\)/.exec(header)?.[1];
  if (!descr || !fortran || shapeText === undefined) throw ccError('CC_ERR_NPY_FORMAT', `${file} header is not a numpy header: ${header.trim()}`);
  if (fortran === 'True') throw ccError('CC_ERR_NPY_FORMAT', `${file} is Fortran-ordered; save it C-ordered (np.ascontiguousarray)`);
  const entries = shapeText.split(',').map((s) => s.trim());
  // "(3,)" ends in an empty entry; an empty one anywhere else is not a shape.
  if (entries.length > 1 && entries[entries.length - 1] === '') entries.pop();
  if (entries.length === 1 && entries[0] === '') entries.pop();
  const shape = entries.map((e) => {
    const n = /^\d+L?$/.test(e) ? Number(e.replace(/L$/, '')) : NaN;
    if (!Number.isSafeInteger(n)) throw ccError('CC_ERR_NPY_FORMAT', `${file} has shape (${shapeText.slice(0, 80)}): entry ${JSON.stringify(e.slice(0, 40))} is not a non-negative integer`);
    return n;
  });
  const known = DESCR[descr];
  const uni = /^<U(\d+)$/.exec(descr);
  if (!known && !uni) throw ccError('CC_ERR_NPY_DTYPE', file, descr, [...Object.keys(DESCR), '<U*'].join(' '));
  return {
    dtype: known ? known.dtype : 'unicode',
    shape,
    itemSize: known ? known.size : 4 * Number(uni![1]),
    dataOffset: start + hlen,
  };
}

/** Read only the header (shape and dtype) of an .npy file. */
export function readNpyHeader(file: string): NpyHeader {
  const fd = openSync(file, 'r');
  try {
    const buf = Buffer.alloc(Math.min(4096, fstatSync(fd).size));
    readSync(fd, buf, 0, buf.length, 0);
    return parseHeader(buf, file);
  } finally {
    closeSync(fd);
  }
}

export function readNpy(file: string): NpyArray {
  const buf = readFileSync(file);
  const h = parseHeader(buf, file);
  const count = h.shape.reduce((a, b) => a * b, 1);
  const need = count * h.itemSize;
  const have = buf.length - h.dataOffset;
  if (have < need) throw ccError('CC_ERR_NPY_TRUNCATED', file, need, have);
  const bytes = buf.subarray(h.dataOffset, h.dataOffset + need);
  if (h.dtype === 'unicode') {
    const chars = h.itemSize / 4;
    const out: string[] = [];
    for (let i = 0; i < count; i++) {
      let s = '';
      for (let c = 0; c < chars; c++) {
        const cp = bytes.readUInt32LE((i * chars + c) * 4);
        if (cp === 0) break;
        s += String.fromCodePoint(cp);
      }
      out.push(s);
    }
    return { dtype: 'unicode', shape: h.shape, data: out };
  }
  // Copy into a fresh, aligned buffer: typed arrays need element alignment.
  const copy = new Uint8Array(need);
  copy.set(bytes);
  const ab = copy.buffer;
  const data: NpyData =
    h.dtype === 'float32'
      ? new Float32Array(ab)
      : h.dtype === 'float64'
        ? new Float64Array(ab)
        : h.dtype === 'int64'
          ? new BigInt64Array(ab)
          : h.dtype === 'int32'
            ? new Int32Array(ab)
            : h.dtype === 'int16'
              ? new Int16Array(ab)
              : h.dtype === 'uint16'
                ? new Uint16Array(ab)
                : new Uint8Array(ab);
  return { dtype: h.dtype, shape: h.shape, data };
}

/** Numeric view of any numeric npy array as float64 values. */
export function npyNumbers(a: NpyArray, file = 'array'): Float64Array {
  if (a.dtype === 'unicode') throw ccError('CC_ERR_NPY_DTYPE', file, 'unicode', 'numeric');
  const src = a.data as Exclude<NpyData, string[]>;
  const out = new Float64Array(src.length);
  for (let i = 0; i < src.length; i++) out[i] = Number(src[i]);
  return out;
}

function descrOf(data: NpyData): string {
  if (Array.isArray(data)) return `<U${Math.max(1, ...data.map((s) => [...s].length))}`;
  if (data instanceof Float32Array) return '<f4';
  if (data instanceof Float64Array) return '<f8';
  if (data instanceof BigInt64Array) return '<i8';
  if (data instanceof Int32Array) return '<i4';
  if (data instanceof Int16Array) return '<i2';
  if (data instanceof Uint16Array) return '<u2';
  return '|u1';
}

/** Encode an array as .npy (version 1.0) bytes. */
export function encodeNpy(data: NpyData, shape: readonly number[]): Buffer {
  const descr = descrOf(data);
  const shapeText = shape.length === 1 ? `(${shape[0]},)` : `(${shape.join(', ')})`;
  let header = `{'descr': '${descr}', 'fortran_order': False, 'shape': ${shapeText}, }`;
  const total = 10 + header.length + 1;
  header += ' '.repeat((64 - (total % 64)) % 64) + '\n';
  const pre = Buffer.alloc(10);
  pre[0] = 0x93;
  pre.write('NUMPY', 1, 'latin1');
  pre[6] = 1;
  pre[7] = 0;
  pre.writeUInt16LE(header.length, 8);
  let body: Buffer;
  if (Array.isArray(data)) {
    const chars = Number(descr.slice(2));
    body = Buffer.alloc(data.length * chars * 4);
    data.forEach((s, i) => [...s].forEach((ch, c) => body.writeUInt32LE(ch.codePointAt(0)!, (i * chars + c) * 4)));
  } else body = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  return Buffer.concat([pre, Buffer.from(header, 'latin1'), body]);
}

export function writeNpy(file: string, data: NpyData, shape: readonly number[] = [data.length]): void {
  writeFileSync(file, encodeNpy(data, shape));
}
