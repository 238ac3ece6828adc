import type { OpSchema } from '../graph.js';
import { convOps } from './conv.js';
import { elementwiseOps } from './elementwise.js';
import { linalgOps } from './linalg.js';
import { reduceOps } from './reduce.js';
import { shapeOps } from './shape.js';

/** Every op the builder can emit, keyed by ONNX op type. Adding an op means adding its schema here. */
export const OP_SCHEMAS: ReadonlyMap<string, OpSchema> = new Map(
  [...elementwiseOps, ...linalgOps, ...convOps, ...shapeOps, ...reduceOps].map((s) => [s.opType, s]),
);

export const lookupSchema = (opType: string): OpSchema | undefined => OP_SCHEMAS.get(opType);
