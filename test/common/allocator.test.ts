import { describe, expect, it } from 'vitest';
import { relaunch, trainingAllocatorEnv, TRAINING_MALLOC_TUNABLES } from '../../src/common/allocator.js';

describe('training allocator settings', () => {
  it('adds the malloc tunables on glibc and keeps the ones already set', () => {
    expect(trainingAllocatorEnv({}, '2.36')?.GLIBC_TUNABLES).toBe(TRAINING_MALLOC_TUNABLES);
    expect(TRAINING_MALLOC_TUNABLES).toContain('glibc.malloc.mmap_max=0');
    const env = trainingAllocatorEnv({ GLIBC_TUNABLES: 'glibc.pthread.rseq=0', PATH: '/bin' }, '2.36');
    expect(env?.GLIBC_TUNABLES).toBe(`glibc.pthread.rseq=0:${TRAINING_MALLOC_TUNABLES}`);
    expect(env?.PATH).toBe('/bin');
  });

  it('changes nothing off glibc, on opt-out, or when mmap_max is already chosen', () => {
    expect(trainingAllocatorEnv({}, null)).toBeUndefined();
    expect(trainingAllocatorEnv({ CORTEXCAST_ALLOCATOR: 'system' }, '2.36')).toBeUndefined();
    expect(trainingAllocatorEnv({ GLIBC_TUNABLES: 'glibc.malloc.mmap_max=4' }, '2.36')).toBeUndefined();
  });

  it('relaunches node with the environment and returns its exit code', async () => {
    const env = trainingAllocatorEnv({ ...process.env }, '2.36')!;
    const check = 'process.exit(String(process.env.GLIBC_TUNABLES).includes("mmap_max=0") ? 7 : 3)';
    expect(await relaunch(['-e', check], env)).toBe(7);
    expect(await relaunch(['-e', check], { ...process.env, GLIBC_TUNABLES: '' })).toBe(3);
  });
});
