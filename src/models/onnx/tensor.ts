/** Element types cortexcast graphs use, with their ONNX TensorProto.DataType codes. */
export type DType = 'float32' | 'float64' | 'int64' | 'int32' | 'uint8' | 'int8' | 'bool';

export const ONNX_DTYPE: Record<DType, number> = {
  float32: 1,
  uint8: 2,
  int8: 3,
  int32: 6,
  int64: 7,
  bool: 9,
  float64: 11,
};

const FROM_ONNX = new Map<number, DType>(Object.entries(ONNX_DTYPE).map(([k, v]) => [v, k as DType]));

export function dtypeFromOnnx(code: number): DType {
  const d = FROM_ONNX.get(code);
  if (!d) throw new Error(`unsupported ONNX tensor data type ${code}`);
  return d;
}

export type TypedArray = Float32Array | Float64Array | BigInt64Array | Int32Array | Uint8Array | Int8Array;

export function bytesPerElement(dtype: DType): number {
  switch (dtype) {
    case 'float64':
    case 'int64':
      return 8;
    case 'float32':
    case 'int32':
      return 4;
    default:
      return 1;
  }
}

export const isFloat = (d: DType): boolean => d === 'float32' || d === 'float64';

/** A dense tensor held in JavaScript: row-major data and its dims. */
export interface TensorData {
  readonly dtype: DType;
  readonly dims: readonly number[];
  readonly data: TypedArray;
}

export const sizeOf = (dims: readonly number[]): number => dims.reduce((a, b) => a * b, 1);

export function allocate(dtype: DType, n: number): TypedArray {
  switch (dtype) {
    case 'float32':
      return new Float32Array(n);
    case 'float64':
      return new Float64Array(n);
    case 'int64':
      return new BigInt64Array(n);
    case 'int32':
      return new Int32Array(n);
    case 'int8':
      return new Int8Array(n);
    default:
      return new Uint8Array(n);
  }
}

export function tensor(dtype: DType, dims: readonly number[], data?: TypedArray | ArrayLike<number>): TensorData {
  const n = sizeOf(dims);
  let out: TypedArray;
  if (data === undefined) out = allocate(dtype, n);
  else if (isTyped(data) && arrayMatchesDtype(data, dtype)) out = data;
  else {
    out = allocate(dtype, n);
    const src = data as ArrayLike<number>;
    if (dtype === 'int64') for (let i = 0; i < n; i++) (out as BigInt64Array)[i] = BigInt(Math.trunc(Number(src[i])));
    else for (let i = 0; i < n; i++) (out as Float32Array)[i] = Number(src[i]);
  }
  if (out.length !== n) throw new Error(`tensor data has ${out.length} elements, dims [${dims}] need ${n}`);
  return { dtype, dims: [...dims], data: out };
}

function isTyped(x: unknown): x is TypedArray {
  return ArrayBuffer.isView(x);
}

function arrayMatchesDtype(a: TypedArray, d: DType): boolean {
  return (
    (d === 'float32' && a instanceof Float32Array) ||
    (d === 'float64' && a instanceof Float64Array) ||
    (d === 'int64' && a instanceof BigInt64Array) ||
    (d === 'int32' && a instanceof Int32Array) ||
    (d === 'int8' && a instanceof Int8Array) ||
    ((d === 'uint8' || d === 'bool') && a instanceof Uint8Array)
  );
}

/** Little-endian bytes of a tensor, as ONNX raw_data wants them (x86/ARM are little-endian). */
export function rawBytes(t: TensorData): Uint8Array {
  return new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
}

export function fromRawBytes(dtype: DType, dims: readonly number[], raw: Uint8Array): TensorData {
  const n = sizeOf(dims);
  const need = n * bytesPerElement(dtype);
  if (raw.byteLength !== need) throw new Error(`raw tensor data has ${raw.byteLength} bytes, [${dims}] ${dtype} needs ${need}`);
  // Copy into an aligned buffer: protobuf slices may start at any offset.
  const buf = new Uint8Array(need);
  buf.set(raw);
  const out = allocate(dtype, 0).constructor as new (b: ArrayBuffer) => TypedArray;
  return { dtype, dims: [...dims], data: new out(buf.buffer) };
}
