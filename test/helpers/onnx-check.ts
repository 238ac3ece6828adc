import { execFileSync, spawnSync } from 'node:child_process';

/** A python3 that imports onnx (Debian's python3-onnx), if any. */
export const onnxPython = ['/usr/bin/python3', 'python3'].find((py) => spawnSync(py, ['-c', 'import onnx'], { stdio: 'ignore' }).status === 0);

/**
 * Run onnx.checker.check_model(full_check=True) on a model file; returns 'ok <opset>' or undefined
 * (with a warning naming the missing package) when python3-onnx is not installed.
 */
export function onnxCheck(file: string): string | undefined {
  if (!onnxPython) {
    console.warn('SKIPPED: python3-onnx is not installed (apt-get install python3-onnx) - ONNX checker not run');
    return undefined;
  }
  return execFileSync(onnxPython, ['-c', `import onnx; m = onnx.load('${file}'); onnx.checker.check_model(m, full_check=True); print('ok', m.opset_import[0].version)`]).toString().trim();
}
