/**
 * Turns key paths (zod issue paths, or our own checks) into `file:line:col: path: message`
 * by walking the parsed YAML Document, so every config error points at the offending text.
 */
import { isMap, isPair, isScalar, isSeq, type Document, type LineCounter, type Node } from 'yaml';
import { z } from 'zod';

export type KeyPath = readonly PropertyKey[];

export interface Located {
  path: KeyPath;
  message: string;
  /** Point at the key itself rather than its value (unknown keys). */
  atKey?: boolean;
}

/** `methods[1].options.alpha`; odd keys are quoted: `options["a b"]`. */
export function formatPath(path: KeyPath): string {
  let out = '';
  for (const seg of path) {
    if (typeof seg === 'number') out += `[${seg}]`;
    else {
      const s = String(seg);
      out += /^[A-Za-z_][\w-]*$/.test(s) ? (out ? `.${s}` : s) : `[${JSON.stringify(s)}]`;
    }
  }
  return out || '(top level)';
}

/**
 * The source offset of the deepest node along `path` that exists (a missing key points at
 * its parent mapping), at the key when `atKey` and the last segment is a mapping key.
 */
function offsetOf(doc: Document, path: KeyPath, atKey: boolean): number {
  let node: unknown = doc.contents;
  let best = rangeStart(node) ?? 0;
  for (let i = 0; i < path.length; i++) {
    const seg = path[i];
    if (isMap(node)) {
      const pair = node.items.find((p) => isPair(p) && isScalar(p.key) && String(p.key.value) === String(seg));
      if (!pair) break;
      const keyStart = rangeStart(pair.key);
      if (atKey && i === path.length - 1 && keyStart !== undefined) return keyStart;
      node = pair.value;
      best = rangeStart(node) ?? keyStart ?? best;
    } else if (isSeq(node) && typeof seg === 'number' && seg < node.items.length) {
      node = node.items[seg];
      best = rangeStart(node) ?? best;
    } else break;
  }
  return best;
}

function rangeStart(node: unknown): number | undefined {
  const range = (node as Node | null | undefined)?.range;
  return Array.isArray(range) ? range[0] : undefined;
}

export function locate(doc: Document, lines: LineCounter, path: KeyPath, atKey = false): { line: number; col: number } {
  return lines.linePos(offsetOf(doc, path, atKey));
}

export function formatLocated(file: string, doc: Document, lines: LineCounter, e: Located): { line: number; col: number; text: string } {
  const { line, col } = locate(doc, lines, e.path, e.atKey ?? false);
  return { line, col, text: `${file}:${line}:${col}: ${formatPath(e.path)}: ${e.message}` };
}

// --------------------------------------------------------------------------------------------
// zod issues → messages

function describe(value: unknown): string {
  if (value === undefined) return 'nothing';
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'a list';
  if (typeof value === 'object') return 'a mapping';
  if (typeof value === 'string') return `string ${JSON.stringify(value.length > 40 ? value.slice(0, 40) + '…' : value)}`;
  return `${typeof value} ${String(value)}`;
}

const EXPECTED: Record<string, string> = { int: 'an integer', object: 'a mapping', array: 'a list', string: 'a string', number: 'a number', boolean: 'true or false', record: 'a mapping' };

function valueAt(root: unknown, path: KeyPath): unknown {
  let v = root;
  for (const seg of path) {
    if (v === null || typeof v !== 'object') return undefined;
    v = (v as Record<PropertyKey, unknown>)[seg];
  }
  return v;
}

/** Strip wrappers that do not change which keys an object accepts. */
function unwrap(s: z.ZodType): z.ZodType {
  for (;;) {
    if (s instanceof z.ZodOptional || s instanceof z.ZodDefault || s instanceof z.ZodNullable) s = s.unwrap() as z.ZodType;
    else if (s instanceof z.ZodPipe) s = s.in as z.ZodType;
    else return s;
  }
}

/** For a union, the branch the data selects (by discriminator when there is one). */
function pickBranch(s: z.ZodType, data: unknown): z.ZodType {
  if (!(s instanceof z.ZodUnion)) return s;
  const options = s.options as z.ZodType[];
  const disc = s instanceof z.ZodDiscriminatedUnion ? (s.def.discriminator as string) : undefined;
  if (disc && data && typeof data === 'object') {
    const v = (data as Record<string, unknown>)[disc];
    const hit = options.find((o) => {
      const u = unwrap(o);
      return u instanceof z.ZodObject && (u.shape as Record<string, z.ZodType>)[disc]?.safeParse(v).success;
    });
    if (hit) return unwrap(hit);
  }
  return unwrap(options.find((o) => unwrap(o) instanceof z.ZodObject) ?? options[0]);
}

/** The schema that applies at `path`, walking the schema alongside the data (unions by their data). */
function schemaAt(schema: z.ZodType, root: unknown, path: KeyPath): z.ZodType | undefined {
  let s: z.ZodType | undefined = pickBranch(unwrap(schema), root);
  let data = root;
  for (const seg of path) {
    data = valueAt(data, [seg]);
    if (s instanceof z.ZodObject) s = (s.shape as Record<string, z.ZodType>)[String(seg)];
    else if (s instanceof z.ZodArray) s = s.element as z.ZodType;
    else if (s instanceof z.ZodRecord) s = s.valueType as z.ZodType;
    else return undefined;
    if (!s) return undefined;
    s = pickBranch(unwrap(s), data);
  }
  return s;
}

/** The keys a strict object at `path` accepts. */
export function validKeysAt(schema: z.ZodType, root: unknown, path: KeyPath): string[] {
  const s = schemaAt(schema, root, path);
  return s instanceof z.ZodObject ? Object.keys(s.shape) : [];
}

/** One or more located errors per zod issue (an unknown-keys issue gives one per key). */
export function issuesToLocated(issues: readonly z.core.$ZodIssue[], schema: z.ZodType, data: unknown, prefix: KeyPath = []): Located[] {
  const out: Located[] = [];
  for (const issue of issues) {
    const path = [...prefix, ...issue.path];
    const value = valueAt(data, issue.path);
    switch (issue.code) {
      case 'unrecognized_keys': {
        const valid = validKeysAt(schema, data, issue.path);
        for (const key of issue.keys) {
          out.push({ path: [...path, key], atKey: true, message: `unknown key${valid.length ? ` (valid: ${valid.join(', ')})` : ''}` });
        }
        break;
      }
      case 'invalid_type': {
        // zod reports an integer field given a string as "expected number".
        const target = schemaAt(schema, data, issue.path);
        const expected = issue.expected === 'number' && target instanceof z.ZodNumber && target.isInt ? 'int' : issue.expected;
        out.push({
          path,
          message: value === undefined ? `missing (expected ${EXPECTED[expected] ?? expected})` : `expected ${EXPECTED[expected] ?? expected}, got ${describe(value)}`,
        });
        break;
      }
      case 'invalid_value':
        out.push({ path, message: `must be one of ${issue.values.map((v) => JSON.stringify(v)).join(', ')}; got ${describe(value)}` });
        break;
      case 'invalid_union': {
        const opts = (issue as { options?: unknown[] }).options;
        out.push({ path, message: opts ? `must be one of ${opts.map((v) => JSON.stringify(v)).join(', ')}; got ${describe(value)}` : `${issue.message}; got ${describe(value)}` });
        break;
      }
      case 'too_small':
      case 'too_big': {
        const bound = issue.code === 'too_small' ? issue.minimum : issue.maximum;
        const op = issue.code === 'too_small' ? (issue.inclusive ? '≥' : '>') : issue.inclusive ? '≤' : '<';
        out.push({
          path,
          message: issue.origin === 'array' ? `needs ${issue.code === 'too_small' ? 'at least' : 'at most'} ${String(bound)} item(s)`
            : issue.origin === 'string' ? `needs ${issue.code === 'too_small' ? 'at least' : 'at most'} ${String(bound)} character(s)`
            : `must be ${op} ${String(bound)}; got ${describe(value)}`,
        });
        break;
      }
      default:
        out.push({ path, message: value === undefined ? issue.message : `${issue.message}; got ${describe(value)}` });
    }
  }
  return out;
}
