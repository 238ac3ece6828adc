import { createHash } from 'node:crypto';
import protobuf from 'protobufjs';
import { fileURLToPath } from 'node:url';
import { Graph, GraphError, type Attr, type AttrType, type Dim, type Value } from './graph.js';
import { lookupSchema } from './ops/index.js';
import { dtypeFromOnnx, fromRawBytes, ONNX_DTYPE, rawBytes, tensor, type TensorData } from './tensor.js';

const root = protobuf.loadSync(fileURLToPath(new URL('./onnx-subset.proto', import.meta.url)));
const ModelProto = root.lookupType('onnx.ModelProto');

const IR_VERSION = 8;
const ATTR_CODE: Record<AttrType, number> = { float: 1, int: 2, string: 3, tensor: 4, floats: 6, ints: 7 };
const ATTR_FROM_CODE = new Map(Object.entries(ATTR_CODE).map(([k, v]) => [v, k as AttrType]));

export interface ModelMeta {
  producerVersion?: string;
  docString?: string;
  /** Free-form key/value pairs stored in the model (metadata_props). */
  metadata?: Record<string, string>;
}

const tensorProto = (name: string, t: TensorData) => ({
  name,
  dims: t.dims.map((d) => d),
  dataType: ONNX_DTYPE[t.dtype],
  rawData: rawBytes(t),
});

const valueInfo = (v: Value) => ({
  name: v.name,
  type: {
    tensorType: {
      elemType: ONNX_DTYPE[v.dtype],
      shape: { dim: v.shape.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })) },
    },
  },
});

function attrProto(name: string, a: Attr) {
  const base = { name, type: ATTR_CODE[a.type] };
  switch (a.type) {
    case 'int':
      return { ...base, i: a.value as number };
    case 'float':
      return { ...base, f: a.value as number };
    case 'string':
      return { ...base, s: Buffer.from(a.value as string, 'utf8') };
    case 'ints':
      return { ...base, ints: [...(a.value as number[])] };
    case 'floats':
      return { ...base, floats: [...(a.value as number[])] };
    case 'tensor':
      return { ...base, t: tensorProto('', a.value as TensorData) };
  }
}

/** Serialise a graph as an ONNX ModelProto (binary protobuf). */
export function writeModel(g: Graph, meta: ModelMeta = {}): Uint8Array {
  g.validate();
  const graphIo = new Set([...g.inputs, ...g.outputs].map((v) => v.name));
  const msg = {
    irVersion: IR_VERSION,
    opsetImport: [{ domain: '', version: g.opset }],
    producerName: 'cortexcast',
    producerVersion: meta.producerVersion ?? '0.1.0',
    docString: meta.docString ?? '',
    graph: {
      name: g.name,
      node: g.nodes.map((n) => ({
        name: n.name,
        opType: n.opType,
        domain: n.domain,
        input: [...n.inputs],
        output: [...n.outputs],
        attribute: Object.entries(n.attrs).map(([k, a]) => attrProto(k, a)),
      })),
      initializer: [...g.initializers.values()].map((i) => tensorProto(i.value.name, i.tensor)),
      input: g.inputs.map(valueInfo),
      output: g.outputs.map(valueInfo),
      // Intermediate shapes help anyone inspecting the model (Netron) and ORT's planner.
      valueInfo: [...g.values.values()].filter((v) => !graphIo.has(v.name) && !g.initializers.has(v.name)).map(valueInfo),
    },
    metadataProps: Object.entries(meta.metadata ?? {}).map(([key, value]) => ({ key, value })),
  };
  const err = ModelProto.verify(msg);
  if (err) throw new GraphError(`ONNX message invalid: ${err}`);
  return ModelProto.encode(ModelProto.fromObject(msg)).finish();
}

/* eslint-disable @typescript-eslint/no-explicit-any -- protobufjs decodes into untyped objects; this reader turns them typed at once. */
type Pb = Record<string, any>;

const num = (x: unknown): number => (typeof x === 'number' ? x : Number(x));

function readTensor(t: Pb): TensorData {
  const dtype = dtypeFromOnnx(num(t.dataType));
  const dims: number[] = (t.dims ?? []).map(num);
  if (t.rawData && t.rawData.length) return fromRawBytes(dtype, dims, t.rawData as Uint8Array);
  const src: ArrayLike<number> =
    dtype === 'float64' ? t.doubleData : dtype === 'int64' ? (t.int64Data ?? []).map(num) : dtype === 'float32' ? t.floatData : t.int32Data;
  return tensor(dtype, dims, src ?? []);
}

function readValueInfo(v: Pb): { name: string; dtype: ReturnType<typeof dtypeFromOnnx>; shape: Dim[] } {
  const tt = v.type?.tensorType;
  if (!tt) throw new GraphError(`value '${v.name}' is not a tensor`);
  const shape: Dim[] = (tt.shape?.dim ?? []).map((d: Pb) => (d.dimParam ? String(d.dimParam) : num(d.dimValue)));
  return { name: String(v.name), dtype: dtypeFromOnnx(num(tt.elemType)), shape };
}

function readAttr(a: Pb): Attr {
  const type = ATTR_FROM_CODE.get(num(a.type));
  if (!type) throw new GraphError(`attribute '${a.name}' has unsupported type ${a.type}`);
  switch (type) {
    case 'int':
      return { type, value: num(a.i) };
    case 'float':
      return { type, value: num(a.f) };
    case 'string':
      return { type, value: Buffer.from(a.s ?? []).toString('utf8') };
    case 'ints':
      return { type, value: (a.ints ?? []).map(num) };
    case 'floats':
      return { type, value: (a.floats ?? []).map(num) };
    case 'tensor':
      return { type, value: readTensor(a.t) };
  }
}

export interface ReadModel {
  graph: Graph;
  opset: number;
  metadata: Record<string, string>;
  producer: string;
}

export interface ReadOptions {
  /**
   * Replace a graph input by ops of your own: called for each input, it returns the value the
   * model's nodes then read in its place. Used to put preprocessing in front of a model (export
   * triton); the new graph input may even take the old one's name.
   */
  prelude?: (g: Graph, input: { name: string; dtype: ReturnType<typeof dtypeFromOnnx>; shape: Dim[] }) => Value;
  /**
   * Replace a node by ops of your own: return the values that stand for its outputs, in order, or
   * undefined to keep the node (quantize rewrites MatMuls this way).
   */
  rewrite?: (g: Graph, node: RewriteNode) => Value[] | undefined;
}

export interface RewriteNode {
  name: string;
  opType: string;
  domain: string;
  inputs: (Value | undefined)[];
  attrs: Record<string, Attr['value']>;
}

/**
 * Parse an ONNX model into a cortexcast Graph. Nodes are re-added through the builder, so every
 * node is shape-checked again: a corrupted or foreign model fails here with the node named.
 */
export function readModel(bytes: Uint8Array, opts: ReadOptions = {}): ReadModel {
  const m = decodeModel(bytes);
  const gp: Pb = m.graph ?? {};
  const g = new Graph(String(gp.name ?? 'graph'), lookupSchema);
  const opset = (m.opsetImport ?? []).find((o: Pb) => !o.domain)?.version;
  g.opset = opset ? num(opset) : g.opset;
  const outputs = addModelNodes(g, gp, opts, '');
  for (const o of gp.output ?? []) {
    const v = outputs.get(String(o.name))!;
    if (v.name === String(o.name)) g.outputs.push(v);
    else g.output(v, String(o.name)); // a rewritten producer: keep the model's output name
  }
  const metadata: Record<string, string> = {};
  for (const p of m.metadataProps ?? []) metadata[String(p.key)] = String(p.value ?? '');
  return { graph: g, opset: g.opset, metadata, producer: String(m.producerName ?? '') };
}

/**
 * Add a whole model's nodes to an existing graph, every name prefixed with `prefix`, its inputs read
 * from `inputs` (by input name): several models in one graph (an ensemble). Returns the model's
 * outputs by name. The model's opset must not be newer than the graph's.
 */
export function mergeModel(g: Graph, bytes: Uint8Array, prefix: string, inputs: ReadonlyMap<string, Value>, shared?: Map<string, Value>): Map<string, Value> {
  const m = decodeModel(bytes);
  const opset = (m.opsetImport ?? []).find((o: Pb) => !o.domain)?.version;
  if (opset && num(opset) > g.opset) throw new GraphError(`model '${prefix}' uses opset ${num(opset)}, newer than the graph's ${g.opset}`);
  return addModelNodes(g, m.graph ?? {}, { prelude: (_, info) => {
    const v = inputs.get(info.name);
    if (!v) throw new GraphError(`model '${prefix}' has an input '${info.name}' that was not given`);
    return v;
  } }, prefix, shared);
}

function decodeModel(bytes: Uint8Array): Pb {
  try {
    return ModelProto.toObject(ModelProto.decode(bytes), { longs: Number, bytes: Uint8Array as unknown as typeof String, defaults: false }) as Pb;
  } catch (e) {
    throw new GraphError(`not a readable ONNX model: ${(e as Error).message}`);
  }
}

/**
 * `shared`: initializers by content, across the models merged into one graph. A weight that another
 * merged model already holds (the ridge map every ridge-anchored decoder of one dataset carries) is
 * stored once, and ONNX Runtime's common-subexpression pass then computes what reads it once.
 */
function addModelNodes(g: Graph, gp: Pb, opts: ReadOptions, prefix: string, shared?: Map<string, Value>): Map<string, Value> {
  const inits = new Set<string>();
  const alias = new Map<string, Value>();
  for (const t of gp.initializer ?? []) {
    const data = readTensor(t);
    inits.add(String(t.name));
    const key = shared && `${data.dtype}:${data.dims.join('x')}:${createHash('sha256').update(rawBytes(data)).digest('hex')}`;
    const same = key ? shared!.get(key) : undefined;
    if (same) {
      alias.set(String(t.name), same);
      continue;
    }
    const v = g.initializer(prefix + String(t.name), data, { exactName: true });
    if (key) shared!.set(key, v);
  }
  for (const v of gp.input ?? []) {
    if (inits.has(String(v.name))) continue; // older models list initializers as inputs too
    const info = readValueInfo(v);
    if (opts.prelude) alias.set(info.name, opts.prelude(g, info));
    else g.input(info.name, info.dtype, info.shape);
  }
  const value = (name: string): Value => alias.get(name) ?? g.value(prefix + name);
  for (const n of (gp.node ?? []) as Pb[]) {
    const attrs: Record<string, Attr> = {};
    for (const a of n.attribute ?? []) attrs[String(a.name)] = readAttr(a);
    const inputs = (n.input ?? []).map((name: string) => (name === '' ? undefined : value(name)));
    const plain = Object.fromEntries(Object.entries(attrs).map(([k, a]) => [k, a.value]));
    const replaced = opts.rewrite?.(g, { name: String(n.name ?? ''), opType: String(n.opType), domain: String(n.domain ?? ''), inputs, attrs: plain });
    if (replaced) (n.output ?? []).forEach((o: string, i: number) => alias.set(String(o), replaced[i]));
    else addNode(g, n, inputs, attrs, prefix);
  }
  return new Map(((gp.output ?? []) as Pb[]).map((o) => [String(o.name), value(String(o.name))]));
}

function addNode(g: Graph, n: Pb, inputs: (Value | undefined)[], attrs: Record<string, Attr>, prefix: string): void {
  const plain: Record<string, Attr['value']> = {};
  for (const [k, a] of Object.entries(attrs)) plain[k] = a.value;
  const name = prefix + String(n.name || `${n.opType}_${g.nodes.length}`);
  g.opN(String(n.opType), inputs, plain, { name, outputNames: (n.output ?? []).map((o: string) => prefix + String(o)), domain: n.domain ? String(n.domain) : '' });
}
