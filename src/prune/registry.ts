/**
 * Method discovery: every folder `methods/<name>/` with an `index.ts` (or `index.js`) whose
 * default export is a PruningMethod is a method — no edit of the engine or runner needed. A
 * module path (anything with a slash or a .ts/.js suffix) loads a user's plug-in from elsewhere.
 */
import fs from 'node:fs';
import { register } from 'node:module';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { z } from 'zod';
import type { PruningMethod } from './method.ts';
import { ConfigError } from '../util/errors.ts';
import { registerRecipePreset } from '../finetune/recipes.ts';

export const METHODS_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../methods');

function entryOf(dir: string): string | null {
  for (const f of ['index.ts', 'index.js', 'index.mjs']) {
    const p = path.join(dir, f);
    if (fs.existsSync(p)) return p;
  }
  return null;
}

export function methodNames(): string[] {
  if (!fs.existsSync(METHODS_DIR)) return [];
  return fs.readdirSync(METHODS_DIR, { withFileTypes: true })
    .filter((d) => d.isDirectory() && entryOf(path.join(METHODS_DIR, d.name)) !== null)
    .map((d) => d.name)
    .sort();
}

/** The module file each resolved method came from (worker threads import the same file). */
const modules = new WeakMap<object, string>();

/** The module file a method was loaded from (undefined for a method built in code). */
export function moduleOf(m: object): string | undefined {
  return modules.get(m);
}

const PLUGIN_ENTRY = pathToFileURL(path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../plugin.ts')).href;
const hookedRoots = new Set<string>();

/**
 * Let a plug-in folder outside the repository import `prunelab/plugin` and load as ES modules
 * (see plugin-hooks.mjs). Registered once per folder and thread (worker threads load plug-ins too).
 */
function hookPluginFolder(dir: string): void {
  const root = pathToFileURL(dir.endsWith(path.sep) ? dir : dir + path.sep).href;
  if (hookedRoots.has(root) || root.startsWith(pathToFileURL(METHODS_DIR).href)) return;
  hookedRoots.add(root);
  register('./plugin-hooks.mjs', import.meta.url, { data: { entry: PLUGIN_ENTRY, root } });
}

async function importMethod(file: string, label: string): Promise<PruningMethod> {
  const mod = (await import(pathToFileURL(file).href)) as { default?: PruningMethod };
  const m = mod.default;
  if (!m || typeof m !== 'object' || typeof m.name !== 'string' || !('kind' in m) || !m.options) {
    throw new ConfigError(`${label} does not default-export a pruning method (name, kind, options, …)`, file);
  }
  modules.set(m, file);
  if (m.recoveryRecipe) registerRecipePreset(m.name, m.recoveryRecipe);
  return m;
}

export async function resolveMethod(nameOrPath: string): Promise<PruningMethod> {
  const isPath = nameOrPath.includes('/') || /\.(ts|js|mjs)$/.test(nameOrPath);
  if (isPath) {
    const file = path.resolve(nameOrPath);
    if (!fs.existsSync(file)) throw new ConfigError('method module not found', nameOrPath);
    const isDir = fs.statSync(file).isDirectory();
    const entry = isDir ? entryOf(file) : file;
    if (!entry) throw new ConfigError('method folder has no index.ts/index.js', nameOrPath);
    hookPluginFolder(isDir ? file : path.dirname(file));
    return importMethod(entry, `method module '${nameOrPath}'`);
  }
  const names = methodNames();
  if (!names.includes(nameOrPath)) {
    throw new ConfigError(`unknown method '${nameOrPath}'; valid: ${names.join(', ')} (or a module path)`);
  }
  return importMethod(entryOf(path.join(METHODS_DIR, nameOrPath))!, `methods/${nameOrPath}`);
}

export async function listMethods(): Promise<PruningMethod[]> {
  return Promise.all(methodNames().map((n) => resolveMethod(n)));
}

/** Option keys a method accepts (its schema is a zod object). */
export function optionKeys(m: PruningMethod): string[] {
  const shape = (m.options as unknown as { shape?: Record<string, unknown> }).shape;
  return shape ? Object.keys(shape) : [];
}

/** Describe each option: its default and accepted type, from the zod schema. */
export function describeOptions(m: PruningMethod): Record<string, { default: unknown; description: string | undefined }> {
  const shape = (m.options as unknown as { shape?: Record<string, z.ZodType> }).shape ?? {};
  const defaults = (m.options as z.ZodType).safeParse({});
  const out: Record<string, { default: unknown; description: string | undefined }> = {};
  for (const [k, s] of Object.entries(shape)) {
    out[k] = { default: defaults.success ? (defaults.data as Record<string, unknown>)[k] : undefined, description: s.description };
  }
  return out;
}

/** Validate options (unknown keys are errors that list the valid ones); defaults filled. */
export function parseMethodOptions<O>(m: PruningMethod<O>, raw: Record<string, unknown>): O {
  const r = (m.options as z.ZodType<O>).safeParse(raw);
  if (r.success) return r.data;
  const valid = optionKeys(m as PruningMethod);
  const msgs = r.error.issues.map((i) => {
    if (i.code === 'unrecognized_keys') return `unknown option(s) ${i.keys.map((k) => `'${k}'`).join(', ')}`;
    return `option '${i.path.join('.')}': ${i.message}`;
  });
  throw new ConfigError(`method '${m.name}': ${msgs.join('; ')} (valid options: ${valid.join(', ') || 'none'})`);
}

/** `--option key=value` pairs → object; values are parsed as JSON when they parse, else strings. */
export function parseOptionArgs(pairs: readonly string[]): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const p of pairs) {
    const eq = p.indexOf('=');
    if (eq <= 0) throw new ConfigError(`--option expects key=value, got '${p}'`);
    const key = p.slice(0, eq);
    const text = p.slice(eq + 1);
    let value: unknown = text;
    try { value = JSON.parse(text); } catch { /* a plain string */ }
    out[key] = value;
  }
  return out;
}

/** Names a recovery schedule may be given by: `uniform` and every discovered method that declares one. */
export async function recoveryScheduleNames(): Promise<string[]> {
  return ['uniform', ...(await listMethods()).filter((m) => m.recovery).map((m) => m.name)];
}

/**
 * A recovery schedule by name: `uniform` (built in), a discovered method's name, or a method
 * module path — the method must declare `recovery`.
 */
export async function resolveRecoverySchedule(name: string): Promise<{ name: 'uniform' } | { name: string; method: PruningMethod }> {
  if (name === 'uniform') return { name: 'uniform' };
  let method: PruningMethod;
  try {
    method = await resolveMethod(name);
  } catch (e) {
    if (!(e instanceof ConfigError)) throw e;
    throw new ConfigError(`unknown recovery schedule '${name}'; valid: ${(await recoveryScheduleNames()).join(', ')} (or a method module path)`);
  }
  if (!method.recovery) {
    throw new ConfigError(`method '${method.name}' declares no recovery schedule; valid schedules: ${(await recoveryScheduleNames()).join(', ')}`);
  }
  return { name: method.name, method };
}
