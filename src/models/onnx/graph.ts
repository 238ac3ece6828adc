import { type DType, type TensorData } from './tensor.js';

/** A dimension: a fixed size, or a symbolic name such as 'batch' resolved at run time. */
export type Dim = number | string;

/** A typed, shaped edge of the graph. One node (or graph input / initializer) produces it. */
export interface Value {
  readonly name: string;
  readonly dtype: DType;
  readonly shape: readonly Dim[];
}

export type AttrType = 'int' | 'float' | 'string' | 'ints' | 'floats' | 'tensor';
export type AttrValue = number | string | readonly number[] | TensorData;
export interface Attr {
  readonly type: AttrType;
  readonly value: AttrValue;
}

export interface Node {
  readonly name: string;
  readonly opType: string;
  readonly domain: string;
  /** '' marks an omitted optional input. */
  readonly inputs: readonly string[];
  readonly outputs: readonly string[];
  readonly attrs: Readonly<Record<string, Attr>>;
}

export interface Initializer {
  readonly value: Value;
  readonly tensor: TensorData;
}

/** What shape inference of one node may ask about its inputs. */
export interface InferContext {
  readonly node: string;
  readonly opType: string;
  readonly inputs: readonly (Value | undefined)[];
  input(i: number): Value;
  attr<T extends AttrValue>(name: string, fallback?: T): T;
  hasAttr(name: string): boolean;
  /** The data of input i where it is an initializer (constant), else undefined. */
  constant(i: number): TensorData | undefined;
  /** Where input i is the output of a Shape node: the value whose shape it is (for Expand/Reshape to a runtime shape). */
  shapeSource(i: number): Value | undefined;
  fail(message: string): never;
}

export interface OutputInfo {
  dtype: DType;
  shape: Dim[];
}

export interface OpSchema {
  readonly opType: string;
  readonly attrs: Readonly<Record<string, AttrType>>;
  readonly inputs: readonly [min: number, max: number];
  readonly outputs?: readonly [min: number, max: number];
  infer(ctx: InferContext): OutputInfo[];
}

/** A build-time graph error that names the node, its op and the shapes involved. */
export class GraphError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'GraphError';
  }
}

export const fmtShape = (s: readonly Dim[]): string => `[${s.join(',')}]`;

type SchemaLookup = (opType: string) => OpSchema | undefined;

/**
 * A typed ONNX graph under construction. Every node is shape-checked when it is added, so a wrong
 * layer size fails here with the layer's name rather than later inside ONNX Runtime.
 */
export class Graph {
  readonly inputs: Value[] = [];
  readonly outputs: Value[] = [];
  readonly nodes: Node[] = [];
  readonly initializers = new Map<string, Initializer>();
  readonly values = new Map<string, Value>();
  readonly producer = new Map<string, Node>();
  /** Opset 17: the newest that Debian's python3-onnx checker (1.12) knows; ORT runs it natively. */
  opset = 17;
  private scopes: string[] = [];
  private counters = new Map<string, number>();

  constructor(
    readonly name: string,
    private readonly schemas: SchemaLookup,
  ) {}

  /** Names created inside fn are prefixed with `name/`, so errors and weights say which layer. */
  scope<T>(name: string, fn: () => T): T {
    this.scopes.push(name);
    try {
      return fn();
    } finally {
      this.scopes.pop();
    }
  }

  get currentScope(): string {
    return this.scopes.join('/');
  }

  /** A fresh name under the current scope. */
  uniqueName(base: string): string {
    const prefix = this.scopes.length ? `${this.currentScope}/${base}` : base;
    if (!this.values.has(prefix) && !this.counters.has(prefix)) {
      this.counters.set(prefix, 0);
      return prefix;
    }
    let k = this.counters.get(prefix) ?? 0;
    let name: string;
    do name = `${prefix}_${++k}`;
    while (this.values.has(name));
    this.counters.set(prefix, k);
    return name;
  }

  private define(v: Value): Value {
    if (this.values.has(v.name)) throw new GraphError(`value name '${v.name}' is defined twice`);
    this.values.set(v.name, v);
    return v;
  }

  input(name: string, dtype: DType, shape: readonly Dim[]): Value {
    const v = this.define({ name, dtype, shape: [...shape] });
    this.inputs.push(v);
    return v;
  }

  /** A named constant tensor stored in the model (weights, shapes, filters). */
  initializer(name: string, t: TensorData, opts: { exactName?: boolean } = {}): Value {
    const full = opts.exactName ? name : this.uniqueName(name);
    const v = this.define({ name: full, dtype: t.dtype, shape: [...t.dims] });
    this.initializers.set(full, { value: v, tensor: t });
    return v;
  }

  /** Replace an initializer's data (same dtype and dims), e.g. with trained weights. */
  setInitializer(name: string, t: TensorData): void {
    const init = this.initializers.get(name);
    if (!init) throw new GraphError(`no initializer named '${name}'`);
    if (init.tensor.dtype !== t.dtype || fmtShape(init.tensor.dims) !== fmtShape(t.dims))
      throw new GraphError(
        `initializer '${name}' is ${init.tensor.dtype}${fmtShape(init.tensor.dims)}, got ${t.dtype}${fmtShape(t.dims)}`,
      );
    this.initializers.set(name, { value: init.value, tensor: t });
  }

  /**
   * Turn an initializer into a graph input with the same name and type (training graphs feed
   * parameters and optimizer state in each step instead of baking them into the model).
   */
  promoteToInput(name: string): Value {
    const init = this.initializers.get(name);
    if (!init) throw new GraphError(`no initializer named '${name}' to promote`);
    this.initializers.delete(name);
    this.inputs.push(init.value);
    return init.value;
  }

  /** Drop the initializers no node reads and no output is (left behind when a rewrite replaces the ops that used them). */
  pruneInitializers(): string[] {
    const used = new Set([...this.nodes.flatMap((n) => n.inputs), ...this.outputs.map((o) => o.name)]);
    const dropped = [...this.initializers.keys()].filter((k) => !used.has(k));
    for (const k of dropped) {
      this.initializers.delete(k);
      this.values.delete(k);
    }
    return dropped;
  }

  value(name: string): Value {
    const v = this.values.get(name);
    if (!v) throw new GraphError(`no value named '${name}' in graph '${this.name}'`);
    return v;
  }

  /** Add one node and return its outputs, shape-inferred. */
  opN(
    opType: string,
    inputs: readonly (Value | undefined)[],
    attrs: Record<string, AttrValue | undefined> = {},
    opts: { name?: string; outputs?: number; outputNames?: string[]; domain?: string } = {},
  ): Value[] {
    const schema = this.schemas(opType);
    const nodeName = opts.name ?? this.uniqueName(opType);
    if (!schema) throw new GraphError(`${nodeName}: op '${opType}' has no schema in cortexcast`);
    const [minIn, maxIn] = schema.inputs;
    let n = inputs.length;
    while (n > 0 && inputs[n - 1] === undefined) n--;
    if (n < minIn || n > maxIn)
      throw new GraphError(`${nodeName} (${opType}): takes ${minIn}..${maxIn} inputs, got ${n}`);
    const typedAttrs: Record<string, Attr> = {};
    for (const [k, v] of Object.entries(attrs)) {
      if (v === undefined) continue;
      const type = schema.attrs[k];
      if (!type) throw new GraphError(`${nodeName} (${opType}): unknown attribute '${k}'`);
      typedAttrs[k] = { type, value: v };
    }
    for (const v of inputs.slice(0, n)) {
      if (v && this.values.get(v.name) !== v)
        throw new GraphError(`${nodeName} (${opType}): input '${v.name}' does not belong to graph '${this.name}'`);
    }
    const fail = (message: string): never => {
      const shapes = inputs
        .slice(0, n)
        .map((v) => (v ? `${v.name}: ${v.dtype}${fmtShape(v.shape)}` : '(none)'))
        .join(', ');
      throw new GraphError(`${nodeName} (${opType}): ${message}; inputs ${shapes}`);
    };
    const ctx: InferContext = {
      node: nodeName,
      opType,
      inputs: inputs.slice(0, n),
      input: (i) => inputs[i] ?? fail(`input ${i} is required`),
      attr: <T extends AttrValue>(name: string, fallback?: T): T => {
        const a = typedAttrs[name];
        if (a) return a.value as T;
        if (fallback === undefined) return fail(`attribute '${name}' is required`);
        return fallback;
      },
      hasAttr: (name) => name in typedAttrs,
      constant: (i) => {
        const v = inputs[i];
        return v ? this.initializers.get(v.name)?.tensor : undefined;
      },
      shapeSource: (i) => {
        const v = inputs[i];
        const p = v ? this.producer.get(v.name) : undefined;
        return p?.opType === 'Shape' && !('start' in p.attrs) && !('end' in p.attrs) ? this.values.get(p.inputs[0]) : undefined;
      },
      fail,
    };
    const infos = schema.infer(ctx);
    const count = opts.outputNames?.length ?? opts.outputs ?? infos.length;
    const outs: Value[] = [];
    for (let i = 0; i < count; i++) {
      const info = infos[i] ?? fail(`op produces ${infos.length} outputs, ${count} requested`);
      const name = opts.outputNames?.[i] ?? (count === 1 ? nodeName : `${nodeName}:${i}`);
      outs.push(this.define({ name, dtype: info.dtype, shape: info.shape }));
    }
    const node: Node = {
      name: nodeName,
      opType,
      domain: opts.domain ?? '',
      inputs: inputs.slice(0, n).map((v) => v?.name ?? ''),
      outputs: outs.map((v) => v.name),
      attrs: typedAttrs,
    };
    this.nodes.push(node);
    for (const o of node.outputs) this.producer.set(o, node);
    return outs;
  }

  op(opType: string, inputs: readonly (Value | undefined)[], attrs: Record<string, AttrValue | undefined> = {}, opts: { name?: string } = {}): Value {
    return this.opN(opType, inputs, attrs, { ...opts, outputs: 1 })[0];
  }

  /**
   * Mark a value as a graph output, under `name` when given (through an Identity node: name large
   * outputs at their producing op instead, an Identity copy of a gigabyte tensor costs real time).
   */
  output(v: Value, name?: string): Value {
    let out = v;
    if (name && name !== v.name) out = this.opN('Identity', [v], {}, { name: `${name}__identity`, outputNames: [name] })[0];
    if (this.outputs.some((o) => o.name === out.name)) throw new GraphError(`'${out.name}' is already an output`);
    this.outputs.push(out);
    return out;
  }

  /**
   * Like output(v, name), but renames v in place when a node produces it and nothing reads it yet, so
   * no Identity copy is made (it matters for gigabyte tensors). The old Value must not be used after.
   */
  outputAs(v: Value, name: string): Value {
    const node = this.producer.get(v.name);
    const unread = node && !this.nodes.some((n) => n.inputs.includes(v.name)) && !this.outputs.some((o) => o.name === v.name);
    if (!node || !unread || this.values.has(name)) return this.output(v, name);
    const renamed: Value = { ...v, name };
    const updated: Node = { ...node, outputs: node.outputs.map((o) => (o === v.name ? name : o)) };
    this.nodes[this.nodes.indexOf(node)] = updated;
    this.producer.delete(v.name);
    for (const o of updated.outputs) this.producer.set(o, updated);
    this.values.delete(v.name);
    this.values.set(name, renamed);
    this.outputs.push(renamed);
    return renamed;
  }

  /** Structural checks ONNX requires: one producer per value, inputs defined before use, outputs produced. */
  validate(): void {
    const known = new Set<string>([...this.inputs.map((v) => v.name), ...this.initializers.keys()]);
    for (const node of this.nodes) {
      for (const i of node.inputs)
        if (i !== '' && !known.has(i)) throw new GraphError(`${node.name} (${node.opType}): input '${i}' is used before it is produced`);
      for (const o of node.outputs) {
        if (known.has(o)) throw new GraphError(`${node.name} (${node.opType}): output '${o}' has another producer`);
        known.add(o);
      }
    }
    for (const o of this.outputs) if (!known.has(o.name)) throw new GraphError(`graph output '${o.name}' is never produced`);
    if (this.outputs.length === 0) throw new GraphError(`graph '${this.name}' has no outputs`);
  }
}
