/** Re-export for tests: the builder lives in src/model/synthetic.ts (the benchmarks use it too). */
export * from '../src/model/synthetic.ts';
