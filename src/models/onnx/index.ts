export * from './graph.js';
export * from './tensor.js';
export { writeModel, readModel, mergeModel, type ModelMeta, type ReadModel, type ReadOptions, type RewriteNode } from './serialize.js';
export { OP_SCHEMAS, lookupSchema } from './ops/index.js';
import { Graph } from './graph.js';
import { lookupSchema } from './ops/index.js';

/** A new empty graph that knows every op schema cortexcast supports. */
export const newGraph = (name: string): Graph => new Graph(name, lookupSchema);
