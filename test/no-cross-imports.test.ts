/**
 * The plug-in boundary, checked on the sources: a file under `methods/<a>/` imports nothing from
 * another method folder `methods/<b>/`, never TensorFlow.js (directly, or through the engine
 * modules it imports for their values), and has no dynamic `import(`. Shared pieces belong in
 * the engine (`src/prune/…`), where every method can reach them.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { REPO_ROOT } from './support.ts';

const METHODS = path.join(REPO_ROOT, 'methods');
const SOURCE = /\.(ts|mts|cts|js|mjs|cjs)$/;

interface ImportRef {
  specifier: string;
  /** `import type` / `export type`: erased at run time. */
  typeOnly: boolean;
}

/** Source without comments (so prose such as "import(" in a comment does not count). */
function stripComments(src: string): string {
  return src.replace(/\/\*[\s\S]*?\*\//g, ' ').replace(/(^|[^:\\'"`])\/\/.*$/gm, '$1');
}

/** Static imports and re-exports of a module: `import … from 'x'`, `import 'x'`, `export … from 'x'`. */
function staticImports(src: string): ImportRef[] {
  const re = /(?:^|[;\n])\s*(import|export)\s+(type\s+)?(?:[\w*${}\s,]+?\s+from\s+)?['"]([^'"]+)['"]/g;
  const out: ImportRef[] = [];
  for (const m of stripComments(src).matchAll(re)) out.push({ specifier: m[3]!, typeOnly: Boolean(m[2]) });
  return out;
}

function hasDynamicImport(src: string): boolean {
  return /(^|[^\w$.])import\s*\(/.test(stripComments(src));
}

const isTfjs = (s: string) => /^@tensorflow\/tfjs(-[\w-]+)?(\/|$)/.test(s);

function sourceFiles(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) return e.name === 'node_modules' ? [] : sourceFiles(p);
    return SOURCE.test(e.name) ? [p] : [];
  });
}

/** The method folder a path lies in (`methods/<name>/…`), or null. */
function methodOf(file: string): string | null {
  const rel = path.relative(METHODS, file);
  if (rel.startsWith('..') || path.isAbsolute(rel)) return null;
  const first = rel.split(path.sep)[0]!;
  return first === rel ? null : first;
}

/**
 * Every boundary violation of one method source file, as readable lines. Value imports of
 * repository modules are followed (type-only ones are erased), so TensorFlow.js reached through
 * an engine module counts too.
 */
function violations(file: string, read: (f: string) => string | null): string[] {
  const own = methodOf(file);
  const out: string[] = [];
  const src = read(file) ?? '';
  if (hasDynamicImport(src)) out.push(`${rel(file)}: dynamic import(…)`);
  for (const { specifier, typeOnly } of staticImports(src)) {
    if (isTfjs(specifier)) out.push(`${rel(file)}: imports ${specifier}`);
    if (!specifier.startsWith('.')) continue;
    const target = path.resolve(path.dirname(file), specifier);
    const other = methodOf(target);
    if (other !== null && other !== own) out.push(`${rel(file)}: imports ${specifier} from method folder '${other}'`);
    if (!typeOnly) {
      const chain = tfjsChain(target, read, new Set([file]));
      if (chain) out.push(`${rel(file)}: reaches TensorFlow.js through ${chain.map(rel).join(' → ')}`);
    }
  }
  return out;
}

/** A path of value imports from `file` to a TensorFlow.js import, or null. */
function tfjsChain(file: string, read: (f: string) => string | null, seen: Set<string>): string[] | null {
  if (seen.has(file)) return null;
  seen.add(file);
  const src = read(file);
  if (src === null) return null;
  for (const { specifier, typeOnly } of staticImports(src)) {
    if (typeOnly) continue;
    if (isTfjs(specifier)) return [file, specifier];
    if (!specifier.startsWith('.')) continue;
    const rest = tfjsChain(path.resolve(path.dirname(file), specifier), read, seen);
    if (rest) return [file, ...rest];
  }
  return null;
}

const rel = (f: string) => (path.isAbsolute(f) ? path.relative(REPO_ROOT, f) : f);
const readDisk = (f: string) => (fs.existsSync(f) ? fs.readFileSync(f, 'utf8') : null);

test('the scanner finds cross-method, TensorFlow.js and dynamic imports (and ignores comments and types)', () => {
  const files: Record<string, string> = {
    [path.join(METHODS, 'a', 'index.ts')]: [
      "import { x } from '../b/util.ts';",
      "import type { T } from '../c/types.ts';",
      "import {\n  y,\n  type Z,\n} from './own.ts';",
      "import * as tf from '@tensorflow/tfjs-core';",
      "export { w } from '../../src/prune/heavy.ts';",
      '// a comment mentioning import("x") and ../b/',
      'const m = await import(url);',
    ].join('\n'),
    [path.join(METHODS, 'a', 'own.ts')]: "export const y = 1;\n",
    [path.join(REPO_ROOT, 'src', 'prune', 'heavy.ts')]: "import '@tensorflow/tfjs';\n",
    [path.join(METHODS, 'clean', 'index.ts')]: "import { z } from 'zod';\nimport type { V } from '../../src/prune/heavy.ts';\n/* import('x') */\n",
  };
  const read = (f: string) => files[f] ?? null;
  const found = violations(path.join(METHODS, 'a', 'index.ts'), read);
  assert.deepEqual(found, [
    'methods/a/index.ts: dynamic import(…)',
    "methods/a/index.ts: imports ../b/util.ts from method folder 'b'",
    "methods/a/index.ts: imports ../c/types.ts from method folder 'c'",
    'methods/a/index.ts: imports @tensorflow/tfjs-core',
    'methods/a/index.ts: reaches TensorFlow.js through src/prune/heavy.ts → @tensorflow/tfjs',
  ]);
  assert.deepEqual(violations(path.join(METHODS, 'clean', 'index.ts'), read), []);
});

test('no method imports another method, TensorFlow.js, or anything by dynamic import', () => {
  const files = sourceFiles(METHODS);
  assert.ok(files.length > 10, `found only ${files.length} method sources under ${METHODS}`);
  const found = files.flatMap((f) => violations(f, readDisk));
  assert.deepEqual(found, [], `plug-in boundary violations:\n${found.join('\n')}`);
});
