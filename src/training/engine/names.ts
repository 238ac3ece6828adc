import type { OptimizerConfig } from './optim.js';

/**
 * The training graph's naming scheme, in one place: what compileTraining names its inputs and
 * outputs, and what TrainingSession feeds and fetches by those names.
 */
/** Suffix of the output that holds a state tensor's value after the step (ping-pong buffers). */
export const NEXT = ':next';
export const nextName = (name: string): string => name + NEXT;
/** Gradient output of a model input (inputGradients) or of a host-updated parameter, whole. */
export const gradName = (name: string): string => `grad:${name}`;
/** Chunk k of a host-updated parameter's gradient (HOST_GRAD_CHUNK elements at most). */
export const gradChunkName = (param: string, k: number): string => `grad:${param}:${k}`;
/** Per-group learning-rate input. */
export const lrInputName = (group: number): string => `lr:${group}`;
export const metricName = (name: string): string => `metric:${name}`;
export const extraOutputName = (name: string): string => `out:${name}`;
export const LOSS = 'loss';
export const STEP_INPUT = 'step';
export const DROPOUT_SEED_INPUT = 'dropout_seed';

/** Names of the optimizer state tensors of parameter `p`. */
export const optimizerStateNames = (kind: OptimizerConfig['kind'], p: string): string[] => (kind === 'adamw' ? [`${p}::adam_m`, `${p}::adam_v`] : [`${p}::momentum`]);

/** Optimizer state, as opposed to parameters and running statistics (which a model export keeps). */
export const isOptimizerState = (name: string): boolean => name.includes('::');
