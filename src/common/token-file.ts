import { readFileSync, statSync } from 'node:fs';
import { ccError } from './errors.js';

/**
 * A token kept in a file (`--token-file`), so it shows neither in `ps` nor in shell history: the
 * file's first line, surrounding white space removed. `what` names the option in errors.
 */
export function readTokenFile(file: string, what = '--token-file'): string {
  let text: string;
  try {
    if (!statSync(file).isFile()) throw new Error('not a regular file');
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw ccError('CC_ERR_OPTION', `${what}: cannot read ${file} (${(e as Error).message})`);
  }
  const token = (text.split(/\r?\n/)[0] ?? '').trim();
  if (!token) throw ccError('CC_ERR_OPTION', `${what}: ${file} is empty; its first line is the token`);
  return token;
}

/** A client's token: --token-file, else --token, else the environment variable (CORTEXCAST_TOKEN). */
export function clientToken(o: { token?: string; tokenFile?: string }, env: NodeJS.ProcessEnv = process.env, variable = 'CORTEXCAST_TOKEN'): string | undefined {
  if (o.tokenFile && o.token) throw ccError('CC_ERR_OPTION', '--token and --token-file are both given; give the token one way');
  if (o.tokenFile) return readTokenFile(o.tokenFile);
  return o.token ?? (env[variable] || undefined);
}
