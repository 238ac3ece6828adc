import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { encodeNpy, readNpy, readNpyHeader, writeNpy } from '../../src/common/npy.js';
import { CortexcastError } from '../../src/common/errors.js';

const dir = mkdtempSync(join(tmpdir(), 'cc-npy-'));

const hasNumpy = (() => {
  try {
    execFileSync('python3', ['-c', 'import numpy'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
})();

describe('npy', () => {
  it('round-trips every dtype we write, with 64-byte aligned headers', () => {
    const cases = [
      { data: Float32Array.from([1.5, -2, 3]), shape: [3] },
      { data: Float64Array.from([1, 2, 3, 4, 5, 6]), shape: [2, 3] },
      { data: Uint8Array.from([0, 255, 7, 9]), shape: [1, 2, 2] },
      { data: BigInt64Array.from([1n, -5n]), shape: [2] },
      { data: ['train', 'validation', 'test'], shape: [3] },
    ];
    for (const c of cases) {
      const f = join(dir, 'x.npy');
      writeNpy(f, c.data, c.shape);
      const bytes = readFileSync(f);
      expect((10 + bytes.readUInt16LE(8)) % 64).toBe(0);
      const back = readNpy(f);
      expect(back.shape).toEqual(c.shape);
      expect(Array.from(back.data as ArrayLike<unknown>)).toEqual(Array.from(c.data as ArrayLike<unknown>));
    }
  });

  it('names the file and the byte counts when data is truncated', () => {
    const f = join(dir, 'trunc.npy');
    const full = encodeNpy(new Float32Array(100), [100]);
    writeFileSync(f, full.subarray(0, full.length - 10));
    expect(() => readNpy(f)).toThrow(/CC_ERR_NPY_TRUNCATED: .*trunc\.npy is truncated: header promises 400 bytes of data, file holds 390/);
  });

  it('rejects non-npy files, Fortran order and unknown dtypes clearly', () => {
    const f = join(dir, 'bad.npy');
    writeFileSync(f, 'hello world, not numpy');
    expect(() => readNpy(f)).toThrow(CortexcastError);
    expect(() => readNpy(f)).toThrow(/no NUMPY magic/);
    const hdr = (descr: string, fortran = 'False'): Buffer => {
      const b = encodeNpy(new Float32Array(2), [2]);
      return Buffer.from(b.toString('latin1').replace("'<f4'", `'${descr}'`).replace("'fortran_order': False", `'fortran_order': ${fortran}`), 'latin1');
    };
    writeFileSync(f, hdr('<c8'));
    expect(() => readNpy(f)).toThrow(/CC_ERR_NPY_DTYPE.*<c8/);
    writeFileSync(f, hdr('<f4', 'True '));
    expect(() => readNpy(f)).toThrow(/Fortran-ordered/);
  });

  it.skipIf(!hasNumpy)('files we write load in numpy, and numpy files load here', () => {
    const f = join(dir, 'np.npy');
    writeNpy(f, Float32Array.from([1, 2, 3, 4, 5, 6]), [2, 3]);
    const out = execFileSync('python3', ['-c', `import numpy as np; a=np.load('${f}'); print(a.dtype, a.shape, a.sum()); np.save('${dir}/from_np.npy', np.arange(12, dtype='<i8').reshape(3,4)); np.save('${dir}/u.npy', np.array(['test','train']))`]).toString();
    expect(out.trim()).toBe('float32 (2, 3) 21.0');
    const back = readNpy(join(dir, 'from_np.npy'));
    expect(back.shape).toEqual([3, 4]);
    expect(Number((back.data as BigInt64Array)[11])).toBe(11);
    expect(readNpy(join(dir, 'u.npy')).data).toEqual(['test', 'train']);
    expect(readNpyHeader(join(dir, 'from_np.npy')).shape).toEqual([3, 4]);
  });
  it('refuses shapes that are not non-negative integers with CC_ERR_NPY_FORMAT (no RangeError, no NaN shape)', () => {
    /** A version-1 file whose header says `shape` as given, followed by `dataBytes` zero bytes. */
    const withShape = (shape: string, dataBytes = 64): string => {
      let header = `{'descr': '<f4', 'fortran_order': False, 'shape': ${shape}, }`;
      header += ' '.repeat((64 - ((10 + header.length + 1) % 64)) % 64) + '\n';
      const pre = Buffer.alloc(10);
      pre[0] = 0x93;
      pre.write('NUMPY', 1, 'latin1');
      pre[6] = 1;
      pre.writeUInt16LE(header.length, 8);
      const f = join(dir, 'shape.npy');
      writeFileSync(f, Buffer.concat([pre, Buffer.from(header, 'latin1'), Buffer.alloc(dataBytes)]));
      return f;
    };
    for (const bad of ['(-2, 3)', "('abc',)", '(2.5,)', '(nan,)', '(1e3,)', '(3,,4)', '(9007199254740993,)']) {
      const f = withShape(bad);
      let err: unknown;
      try {
        readNpy(f);
      } catch (e) {
        err = e;
      }
      expect(err, bad).toBeInstanceOf(CortexcastError);
      expect((err as CortexcastError).code, bad).toBe('CC_ERR_NPY_FORMAT');
      expect((err as Error).message, bad).toMatch(/is not a non-negative integer/);
      expect(() => readNpyHeader(f), bad).toThrow(/CC_ERR_NPY_FORMAT/);
    }
    // What numpy writes still reads: scalars, 1-D with a trailing comma, zero-length axes.
    expect(readNpy(withShape('()', 4)).shape).toEqual([]);
    expect(readNpy(withShape('(4,)', 16)).shape).toEqual([4]);
    expect(readNpy(withShape('(0, 3)', 0)).shape).toEqual([0, 3]);
    expect(readNpy(withShape('(2, 2)', 16)).shape).toEqual([2, 2]);
  });
});
