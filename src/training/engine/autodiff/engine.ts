import { type Graph, type Node, type Value, GraphError, fmtShape, isFloat, tensor } from '../../../models/onnx/index.js';
import { GradContext } from './context.js';
import { GRAD_TABLE } from './rules/index.js';

/**
 * Reverse-mode differentiation over a cortexcast graph. Appends gradient nodes (standard ONNX ops
 * only) to `g` and returns d(loss)/d(v) for every v in `wrt` (parameters or inputs). Only nodes on a
 * path from some `wrt` value to the loss are differentiated. Every rule's output is checked here,
 * once: a gradient exists for each input that needs one, it is floating point, and after undoing
 * broadcasting its shape equals the input's.
 */
export function buildGradients(g: Graph, loss: Value, wrt: readonly Value[]): Map<string, Value> {
  return g.scope('grad', () => {
    const active = new Set(wrt.map((v) => v.name));
    for (const n of g.nodes) if (n.inputs.some((i) => active.has(i))) for (const o of n.outputs) active.add(o);
    if (!active.has(loss.name)) throw new GraphError(`loss '${loss.name}' does not depend on any of ${wrt.map((v) => v.name).join(', ')}`);
    const reaches = new Set([loss.name]);
    const path: Node[] = [];
    for (let k = g.nodes.length - 1; k >= 0; k--) {
      const n = g.nodes[k];
      if (!n.outputs.some((o) => reaches.has(o))) continue;
      if (!n.inputs.some((i) => active.has(i))) continue;
      path.push(n);
      for (const i of n.inputs) if (i && active.has(i)) reaches.add(i);
    }
    const contributions = new Map<string, Value[]>();
    const add = (name: string, v: Value): void => {
      const list = contributions.get(name) ?? [];
      list.push(v);
      contributions.set(name, list);
    };
    const total = (name: string): Value | undefined => {
      const list = contributions.get(name);
      if (!list?.length) return undefined;
      let s = list[0];
      for (let i = 1; i < list.length; i++) s = g.op('Add', [s, list[i]]);
      contributions.set(name, [s]);
      return s;
    };
    const seed = g.initializer('seed', tensor(loss.dtype, [], [1]));
    add(loss.name, loss.shape.length === 0 ? seed : g.op('Expand', [seed, g.op('Shape', [loss])]));

    for (const node of path) {
      const dys = node.outputs.map((o) => total(o));
      if (dys.every((d) => d === undefined)) continue;
      const rule = GRAD_TABLE.get(node.opType);
      if (!rule) throw new GraphError(`no gradient rule for op '${node.opType}' (node ${node.name}); add one in src/training/autodiff/rules`);
      const inputs = node.inputs.map((i) => (i ? g.value(i) : undefined));
      const needs = inputs.map((v) => !!v && active.has(v.name) && isFloat(v.dtype));
      const ctx = new GradContext(g, node, inputs, node.outputs.map((o) => g.value(o)), dys, needs);
      const grads = g.scope(node.name.replace(/^grad\//, ''), () => rule.grad(ctx));
      inputs.forEach((v, i) => {
        if (!needs[i] || !v) return;
        const d = grads[i];
        if (!d) throw new GraphError(`gradient rule ${node.opType} (node ${node.name}) gave no gradient for input ${i} (${v.name})`);
        if (!isFloat(d.dtype)) throw new GraphError(`gradient rule ${node.opType} (node ${node.name}) gave a ${d.dtype} gradient for input ${i}`);
        const fitted = unbroadcast(g, d, v);
        if (!sameShape(fitted.shape, v.shape))
          throw new GraphError(`gradient rule ${node.opType} (node ${node.name}): gradient of input ${i} (${v.name}) is ${fmtShape(fitted.shape)}, input is ${fmtShape(v.shape)}`);
        add(v.name, fitted);
      });
    }
    const out = new Map<string, Value>();
    for (const v of wrt) {
      const d = total(v.name);
      // A value the loss does not depend on has a zero gradient.
      out.set(v.name, d ?? g.op('Expand', [g.initializer('zero', tensor(v.dtype, [], [0])), g.op('Shape', [v])]));
    }
    return out;
  });
}

function sameShape(a: readonly (number | string)[], b: readonly (number | string)[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i] || typeof d === 'string' || typeof b[i] === 'string');
}

/** Sum a gradient over the axes its operand was broadcast along, back to the operand's shape. */
function unbroadcast(g: Graph, d: Value, target: Value): Value {
  if (sameShape(d.shape, target.shape)) return d;
  let v = d;
  const lead = v.shape.length - target.shape.length;
  if (lead > 0) v = g.op('ReduceSum', [v, g.initializer('axes', tensor('int64', [lead], [...Array(lead).keys()]))], { keepdims: 0 });
  const axes = target.shape.flatMap((t, i) => (t === 1 && v.shape[i] !== 1 ? [i] : []));
  if (axes.length) v = g.op('ReduceSum', [v, g.initializer('axes', tensor('int64', [axes.length], axes))], { keepdims: 1 });
  return v;
}
