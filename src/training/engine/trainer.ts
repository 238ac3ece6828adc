/**
 * The training engine's public face: specs and graph compilation (compile.ts), the session that runs
 * steps (session.ts), the host-side optimizer pass (host-optimizer.ts), checkpoints (checkpoint.ts)
 * and the graph's naming scheme (names.ts). Import from here.
 */
export { buildEvalGraph, compileTraining, HOST_GRAD_CHUNK, hostGradChunks, type BuiltModel, type CompiledTraining, type ModelBuilder, type Objective, type TrainingSpec } from './compile.js';
export { TrainingSession, type StepResult } from './session.js';
