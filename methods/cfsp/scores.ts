/**
 * CFSP's fine-grained (intra-block) channel scores (cfsp.md §6). Channel j of the FFN is row j of
 * each "output" linear (gate, up; OPT fc1, shape [m, D]) and column j of the "input" linear
 * (down; OPT fc2, shape [D, m]). Weights are HF `[out, in]` row-major.
 */

export interface HostMatrix {
  data: Float32Array;
  rows: number;
  cols: number;
}

/** a_j = ‖X_j‖₂ of the down-projection input over all calibration tokens. */
export function activationNorms(colSqSum: Float64Array): Float64Array {
  return colSqSum.map(Math.sqrt);
}

/** `activation` (default): score_j = a_j — what the released `three_w_one_wa` ranks by (§6.3). */
export function activationScores(colSqSum: Float64Array): Float64Array {
  return activationNorms(colSqSum);
}

/**
 * `relative-weight` (§6.4): each |W| is normalised over the channels (the other axis than the
 * released code, as RIA does), then
 *   S_ij = [ |Wd_ij|·a_j^b / Σ_j' |Wd_ij'|·a_j'^b + Σ_out |Wo_ji| / Σ_j' |Wo_j'i| ] · a_j^c,
 * score_j = mean_i S_ij over the hidden index i. A zero denominator makes its term 0.
 */
export function relativeWeightScores(
  colSqSum: Float64Array, down: HostMatrix, outputs: readonly HostMatrix[], b: number, c: number,
): Float64Array {
  const m = colSqSum.length;
  const D = down.rows;
  if (down.cols !== m) throw new RangeError(`cfsp: down-projection has ${down.cols} inputs, statistics ${m}`);
  for (const w of outputs) {
    if (w.rows !== m || w.cols !== D) throw new RangeError(`cfsp: FFN output linear is ${w.rows}×${w.cols}, expected ${m}×${D}`);
  }
  const a = activationNorms(colSqSum);
  const ab = a.map((x) => x ** b);
  const sum = new Float64Array(m);
  // Down term: row i of Wd (one hidden unit) is normalised over its m channel entries.
  for (let i = 0; i < D; i++) {
    const o = i * m;
    let den = 0;
    for (let j = 0; j < m; j++) den += Math.abs(down.data[o + j]) * ab[j];
    if (den === 0) continue;
    for (let j = 0; j < m; j++) sum[j] += (Math.abs(down.data[o + j]) * ab[j]) / den;
  }
  // Gate/up terms: column i (one hidden unit) is normalised over its m channel entries.
  for (const w of outputs) {
    const den = new Float64Array(D);
    for (let j = 0; j < m; j++) for (let i = 0; i < D; i++) den[i] += Math.abs(w.data[j * D + i]);
    for (let j = 0; j < m; j++) {
      let s = 0;
      for (let i = 0; i < D; i++) if (den[i] !== 0) s += Math.abs(w.data[j * D + i]) / den[i];
      sum[j] += s;
    }
  }
  const out = new Float64Array(m);
  for (let j = 0; j < m; j++) out[j] = (sum[j] / D) * a[j] ** c;
  return out;
}
