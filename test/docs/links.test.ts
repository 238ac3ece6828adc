import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { describe, expect, it } from 'vitest';
import { anchors, benchCitations, brokenLinks, linkTargets, slug } from '../../scripts/docs/links.js';
import { repoRoot } from '../helpers/paths.js';

const rel = (p: string): string => relative(repoRoot, p).replaceAll('\\', '/');

function* files(dir: string): Generator<string> {
  if (!existsSync(dir)) return;
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) yield* files(p);
    else yield p;
  }
}

/** README.md, the other top-level pages and every page under docs/, by path from the repository root. */
function repositoryPages(): Map<string, string> {
  const top = readdirSync(repoRoot).filter((n) => n.endsWith('.md')).map((n) => join(repoRoot, n));
  const docs = [...files(join(repoRoot, 'docs'))].filter((p) => p.endsWith('.md'));
  return new Map([...top, ...docs].map((p) => [rel(p), readFileSync(p, 'utf8')]));
}

const onDisk = (path: string): boolean => existsSync(join(repoRoot, path));

describe('links of the documentation', () => {
  it('every relative link resolves to a file, and every anchor to a heading', () => {
    expect(brokenLinks(repositoryPages(), onDisk)).toEqual([]);
  });

  it('every benchmark log under docs/bench is cited by its path, and every cited log exists', () => {
    const bench = [...files(join(repoRoot, 'docs/bench'))].map(rel);
    const { uncited, missing } = benchCitations(repositoryPages(), bench);
    expect({ uncited, missing }).toEqual({ uncited: [], missing: [] });
  });
});

describe('benchmark logs cited from the code', () => {
  it('every docs/bench path a source, benchmark or test file names exists', () => {
    const code = ['src', 'bench', 'clients', 'test']
      .flatMap((d) => [...files(join(repoRoot, d))])
      // This folder's own tests cite made-up logs on purpose.
      .filter((p) => /\.(ts|js|py|html)$/.test(p) && !rel(p).startsWith('test/docs/'));
    const bench = [...files(join(repoRoot, 'docs/bench'))].map(rel);
    expect(benchCitations(new Map(code.map((p) => [rel(p), readFileSync(p, 'utf8')])), bench).missing).toEqual([]);
  });
});

describe('the link checks themselves', () => {
  const pages = new Map([
    ['README.md', '# Top\n\nSee [guide](docs/guide.md#serving-live), [gone](docs/gone.md), [bad anchor](docs/guide.md#nowhere), [site](https://example.org/x), [self](#top) and [self-missing](#bottom).\n\n```\n[not a link](docs/none.md)\n```\n'],
    ['docs/guide.md', '# Guide\n\n## Serving `live`\n\n![figure](figure.png) <img src="missing.png"> [up](../README.md) [out](../../etc/passwd)\n\n[ref]: results.md\n'],
  ]);
  const existing = new Set(['README.md', 'docs/guide.md', 'docs/figure.png']);

  it('finds missing files, missing anchors and links out of the repository, and ignores code and external links', () => {
    expect(brokenLinks(pages, (p) => existing.has(p)).sort()).toEqual([
      'README.md: #bottom (no heading #bottom in README.md)',
      'README.md: docs/gone.md (no file docs/gone.md)',
      'README.md: docs/guide.md#nowhere (no heading #nowhere in docs/guide.md)',
      'docs/guide.md: ../../etc/passwd (no file ../etc/passwd)',
      'docs/guide.md: missing.png (no file docs/missing.png)',
      'docs/guide.md: results.md (no file docs/results.md)',
    ]);
  });

  it('makes anchors as GitHub does', () => {
    expect(slug('Serving `live`: the server (gRPC)')).toBe('serving-live-the-server-grpc');
    expect([...anchors('# A\n## A\n<a id="x"></a>\n```\n# not a heading\n```\n')]).toEqual(['a', 'a-1', 'x']);
    expect(linkTargets('[a](b.md "title") [c](<d e.md>) `a code\nspan [x](y.md)` [e](f.md)')).toEqual(['b.md', 'd e.md', 'f.md']);
  });

  it('finds logs nobody cites and citations of logs that do not exist', () => {
    const cited = new Map([
      ['docs/results.md', 'Measured: docs/bench/serve.txt, and [the soak](bench/soak.txt); also docs/bench/renamed.txt.'],
      ['README.md', 'See docs/results.md.'],
    ]);
    expect(benchCitations(cited, ['docs/bench/serve.txt', 'docs/bench/soak.txt', 'docs/bench/quality.txt'])).toEqual({
      uncited: ['docs/bench/quality.txt'],
      missing: ['docs/results.md: docs/bench/renamed.txt'],
    });
  });
});
