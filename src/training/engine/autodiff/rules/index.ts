import type { GradRule } from '../context.js';
import { absGrad } from './abs.js';
import { addGrad } from './add.js';
import { averagePoolGrad } from './average-pool.js';
import { batchNormGrad } from './batch-norm.js';
import { castGrad } from './cast.js';
import { clipGrad } from './clip.js';
import { concatGrad } from './concat.js';
import { convGrad } from './conv.js';
import { convTransposeGrad } from './conv-transpose.js';
import { divGrad } from './div.js';
import { eluGrad } from './elu.js';
import { expGrad } from './exp.js';
import { floorGrad } from './floor.js';
import { gatherGrad } from './gather.js';
import { gatherElementsGrad } from './gather-elements.js';
import { gemmGrad } from './gemm.js';
import { identityGrad } from './identity.js';
import { leakyReluGrad } from './leaky-relu.js';
import { logGrad } from './log.js';
import { matmulGrad } from './matmul.js';
import { maxGrad, minGrad } from './max-min.js';
import { mulGrad } from './mul.js';
import { negGrad } from './neg.js';
import { padGrad } from './pad.js';
import { powGrad } from './pow.js';
import { reduceMaxGrad, reduceMinGrad } from './reduce-max.js';
import { reduceMeanGrad } from './reduce-mean.js';
import { reduceSumGrad } from './reduce-sum.js';
import { reduceSumSquareGrad } from './reduce-sum-square.js';
import { reluGrad } from './relu.js';
import { flattenGrad, reshapeGrad } from './reshape.js';
import { sigmoidGrad } from './sigmoid.js';
import { sliceGrad } from './slice.js';
import { sqrtGrad } from './sqrt.js';
import { squeezeGrad, unsqueezeGrad } from './squeeze.js';
import { subGrad } from './sub.js';
import { tanhGrad } from './tanh.js';
import { transposeGrad } from './transpose.js';
import { whereGrad } from './where.js';

/** Every gradient rule, registered explicitly (one file per op family beside this list). */
export const GRAD_RULES: readonly GradRule[] = [
  absGrad, addGrad, averagePoolGrad, batchNormGrad, castGrad, clipGrad, concatGrad, convGrad, convTransposeGrad, divGrad, eluGrad,
  expGrad, flattenGrad, floorGrad, gatherGrad, gatherElementsGrad, gemmGrad, identityGrad, leakyReluGrad, logGrad, matmulGrad,
  maxGrad, minGrad, mulGrad, negGrad, padGrad, powGrad, reduceMaxGrad, reduceMinGrad, reduceMeanGrad, reduceSumGrad, reduceSumSquareGrad, reluGrad,
  reshapeGrad, sigmoidGrad, sliceGrad, sqrtGrad, squeezeGrad, subGrad, tanhGrad, transposeGrad, unsqueezeGrad, whereGrad,
];

export const GRAD_TABLE: ReadonlyMap<string, GradRule> = new Map(GRAD_RULES.map((r) => [r.opType, r]));
