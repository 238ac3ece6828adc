import { posix } from 'node:path';

/** Markdown with fenced code blocks and inline code spans blanked out: links there are examples, not links. */
export function withoutCode(md: string): string {
  return md.replace(/^( {0,3})(```|~~~)[^\n]*\n[\s\S]*?^\1\2[^\n]*$/gm, '').replace(/(`+)(?:(?!\n[ \t]*\n)[^`])*?\1/g, '');
}

/** Targets of inline links and images, reference definitions, and HTML href/src attributes. */
export function linkTargets(md: string): string[] {
  const text = withoutCode(md);
  const out: string[] = [];
  for (const m of text.matchAll(/!?\[(?:[^\]\n]|\][^(\n])*?\]\(\s*(?:<([^>\n]+)>|([^)\s]+))(?:\s+"[^"]*")?\s*\)/g)) out.push(m[1] ?? m[2]);
  for (const m of text.matchAll(/^\s{0,3}\[[^\]\n]+\]:\s*<?(\S+?)>?(?:\s|$)/gm)) out.push(m[1]);
  for (const m of text.matchAll(/<(?:a|img|source)\b[^>]*?\b(?:href|src)\s*=\s*"([^"]+)"/gi)) out.push(m[1]);
  return out;
}

/** GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens. */
export function slug(heading: string): string {
  const text = heading
    .replace(/!?\[([^\]]*)\]\([^)]*\)/g, '$1')
    .replace(/`/g, '')
    .replace(/<[^>]+>/g, '')
    .trim()
    .toLowerCase();
  return text.replace(/[^\p{L}\p{N}\s_-]/gu, '').replace(/\s/g, '-');
}

/** Every anchor a page offers: its headings (repeats numbered as GitHub does) and explicit id/name attributes. */
export function anchors(md: string): Set<string> {
  const out = new Set<string>();
  const seen = new Map<string, number>();
  for (const m of withoutCodeBlocks(md).matchAll(/^ {0,3}#{1,6}\s+(.+?)\s*#*\s*$/gm)) {
    const base = slug(m[1]);
    const n = seen.get(base) ?? 0;
    seen.set(base, n + 1);
    out.add(n ? `${base}-${n}` : base);
  }
  for (const m of md.matchAll(/<a\b[^>]*?\b(?:id|name)\s*=\s*"([^"]+)"/gi)) out.add(m[1]);
  return out;
}

const withoutCodeBlocks = (md: string): string => md.replace(/^( {0,3})(```|~~~)[^\n]*\n[\s\S]*?^\1\2[^\n]*$/gm, '');

const external = (target: string): boolean => /^[a-z][a-z0-9+.-]*:/i.test(target) || target.startsWith('//');

/**
 * Relative links of the given pages (path from the repository root -> text) that point nowhere: a
 * file that `exists` denies, or an anchor that the target page (when it is one of `pages`) lacks.
 */
export function brokenLinks(pages: Map<string, string>, exists: (path: string) => boolean): string[] {
  const out: string[] = [];
  for (const [page, text] of pages) {
    for (const target of linkTargets(text)) {
      if (external(target)) continue;
      const [rawPath, anchor] = target.split('#', 2);
      const path = decodeURIComponent(rawPath);
      const resolved = path ? posix.normalize(posix.join(posix.dirname(page), path)) : page;
      if (path && (resolved.startsWith('../') || !exists(resolved.replace(/\/$/, '')))) {
        out.push(`${page}: ${target} (no file ${resolved})`);
        continue;
      }
      if (anchor && pages.has(resolved) && !anchors(pages.get(resolved)!).has(decodeURIComponent(anchor))) out.push(`${page}: ${target} (no heading #${anchor} in ${resolved})`);
    }
  }
  return out;
}

/**
 * Benchmark logs against the pages: the logs no page cites by path, and the cited paths that are
 * not logs. A citation is the path from the repository root in the text (`docs/bench/x.txt`) or a
 * relative link that resolves to it.
 */
export function benchCitations(pages: Map<string, string>, benchFiles: string[], benchDir = 'docs/bench'): { uncited: string[]; missing: string[] } {
  const cited = new Map<string, string>();
  const pattern = new RegExp(`${benchDir.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}/[A-Za-z0-9._*-]*[A-Za-z0-9_*-]`, 'g');
  for (const [page, text] of pages) {
    for (const m of text.matchAll(pattern)) cited.set(m[0], page);
    for (const target of linkTargets(text)) {
      if (external(target)) continue;
      const resolved = posix.normalize(posix.join(posix.dirname(page), decodeURIComponent(target.split('#')[0])));
      if (resolved.startsWith(`${benchDir}/`)) cited.set(resolved, page);
    }
  }
  const files = new Set(benchFiles);
  return {
    uncited: benchFiles.filter((f) => !cited.has(f)).sort(),
    missing: [...cited].filter(([path]) => !files.has(path)).map(([path, page]) => `${page}: ${path}`).sort(),
  };
}
