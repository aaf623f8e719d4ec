// Module hooks for method plug-ins outside the repository (registered by registry.ts with
// node:module's register(); plain JavaScript because it runs on Node's loader thread before any
// TypeScript tooling applies there). Two jobs:
// - `prunelab` and `prunelab/plugin` resolve to this package's public entry, wherever the
//   plug-in lives (it has no node_modules of its own);
// - files under a registered plug-in folder load as ES modules even without a package.json
//   saying "type": "module" (as CommonJS they would require() PruneLab's ES modules, which fails
//   while the CLI's own module graph is still evaluating: ERR_REQUIRE_CYCLE_MODULE).
let entry = '';
const roots = [];

export function initialize(data) {
  entry = data.entry;
  roots.push(data.root);
}

const inRoot = (url) => roots.some((r) => url.startsWith(r)) && !url.includes('/node_modules/');

export async function resolve(specifier, context, nextResolve) {
  // Through the rest of the chain, so the TypeScript loader treats the entry as it treats its own.
  if (specifier === 'prunelab' || specifier === 'prunelab/plugin') return nextResolve(entry, context);
  return nextResolve(specifier, context);
}

export async function load(url, context, nextLoad) {
  if (inRoot(url) && /\.(ts|js)$/.test(url)) return nextLoad(url, { ...context, format: 'module' });
  return nextLoad(url, context);
}
