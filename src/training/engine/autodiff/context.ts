import { type Graph, type Node, type Value, type AttrValue, GraphError, fmtShape, tensor } from '../../../models/onnx/index.js';

/**
 * What a gradient rule sees: its node, the forward values, the gradient of each output, and small
 * helpers that emit ops into the training graph. Rules return one gradient per input (undefined where
 * an input takes none); the engine un-broadcasts and checks them.
 */
export class GradContext {
  constructor(
    readonly g: Graph,
    readonly node: Node,
    readonly inputs: readonly (Value | undefined)[],
    readonly outputs: readonly Value[],
    /** Gradient of each output (undefined where the output does not reach the loss). */
    readonly dys: readonly (Value | undefined)[],
    /** Which inputs need a gradient. */
    readonly needs: readonly boolean[],
  ) {}

  get dy(): Value {
    const d = this.dys[0];
    if (!d) throw new GraphError(`${this.node.name}: no gradient reaches output 0`);
    return d;
  }

  x(i: number): Value {
    const v = this.inputs[i];
    if (!v) throw new GraphError(`${this.node.name} (${this.node.opType}): gradient rule needs input ${i}`);
    return v;
  }

  get y(): Value {
    return this.outputs[0];
  }

  attr<T extends AttrValue>(name: string, fallback?: T): T {
    const a = this.node.attrs[name];
    if (a) return a.value as T;
    if (fallback === undefined) throw new GraphError(`${this.node.name}: attribute ${name} missing`);
    return fallback;
  }

  op(opType: string, inputs: readonly (Value | undefined)[], attrs: Record<string, AttrValue | undefined> = {}): Value {
    return this.g.op(opType, inputs, attrs);
  }

  /** A scalar constant of v's dtype. */
  scalar(v: number, like: Value): Value {
    return this.g.initializer('c', tensor(like.dtype, [], [v]));
  }

  ints(values: readonly number[]): Value {
    return this.g.initializer('i', tensor('int64', [values.length], values));
  }

  fixed(v: Value, axis: number): number {
    const a = axis < 0 ? axis + v.shape.length : axis;
    const d = v.shape[a];
    if (typeof d !== 'number') throw new GraphError(`${this.node.name} (${this.node.opType}): gradient needs a fixed size on axis ${a} of ${v.name} ${fmtShape(v.shape)}`);
    return d;
  }

  /** Reshape v to the (runtime) shape of `like`. */
  reshapeLike(v: Value, like: Value): Value {
    if (like.shape.every((d) => typeof d === 'number')) return this.op('Reshape', [v, this.ints(like.shape as number[])]);
    return this.op('Reshape', [v, this.op('Shape', [like])]);
  }

  /** Broadcast v to the (runtime) shape of `like`. */
  expandLike(v: Value, like: Value): Value {
    if (like.shape.every((d) => typeof d === 'number')) return this.op('Expand', [v, this.ints(like.shape as number[])]);
    return this.op('Expand', [v, this.op('Shape', [like])]);
  }

  zero(like: Value): Value {
    return this.scalar(0, like);
  }
}

export interface GradRule {
  readonly opType: string;
  /** Gradients for each input; only compute those with ctx.needs[i]. */
  grad(ctx: GradContext): (Value | undefined)[];
}
