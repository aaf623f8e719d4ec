/*
 * FISTAPruner's per-iteration host pass (methods/fistapruner/fista.ts `acceptStep`) and its exact
 * per-row cut (src/prune/masks.ts `maskPerRow` on |W|, with fista.ts `hardThreshold`'s H(W)), in
 * C, compiled into the OpenBLAS addon (scripts/build-native.sh) and offered as `LinAlg.native`.
 *
 * Hand-written because no library does these: the pass is a fused FISTA step (momentum point,
 * gradient step, soft threshold, objective and early-stop sums, float32 copy of the change) whose
 * float64 operations must be exactly those of the TypeScript, in the same order, so that the
 * iterates, objectives and masks do not change with the kernel (BLAS has no such fused step, and
 * its reductions sum in its own order); the cut is an exact selection with PruneLab's tie rule.
 * Compiled with -ffp-contract=off (no fused multiply-adds).
 *
 * Both split the rows over the addon's thread pool (prunelab_pool_run, native/openblas-kernels.c):
 * a row's values do not depend on any other row, and the pass's four sums are summed per row and
 * then over rows in row order, as the TypeScript sums them, so the results are the same for any
 * thread count and any split.
 */
#include <node_api.h>
#include <math.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "napi-args.h"

/* The addon's thread pool (native/openblas-kernels.c): fn(ctx, t) for every t < tasks. */
extern void prunelab_pool_run(void (*fn)(void *, int64_t), void *ctx, int64_t tasks);

/* Rows per pool task: about this many entries each (the split does not change a result). */
static int64_t rows_per_task(int64_t cols) {
  const int64_t r = 16384 / (cols > 0 ? cols : 1);
  return r > 0 ? r : 1;
}

#define CHECK(call) do { if ((call) != napi_ok) { napi_throw_error(env, NULL, "fista-kernels: bad arguments"); return NULL; } } while (0)

/* The elementwise part of acceptStep for `len` entries: next and D32, and each entry's terms of
 * the four sums (no reduction here, so the loop vectorises; no reassociation either way). */
__attribute__((target_clones("avx512f", "avx2", "default"), optimize("O3")))
static void step_terms(const double *restrict Z, const float *restrict PZ, const double *restrict W, const float *restrict P,
    const float *restrict B, const float *restrict Wd, double *restrict next, float *restrict D32, int64_t len, double beta,
    double step, double thr, double *restrict ts, double *restrict td, double *restrict tw, double *restrict tm) {
  for (int64_t i = 0; i < len; i++) {
    const double zi = Z[i], pzi = PZ[i], bi = B[i], wdi = Wd[i], wi = W[i];
    ts[i] = (zi - wdi) * (0.5 * pzi - bi);
    const double d = zi - wi;
    td[i] = d * d;
    tw[i] = wi * wi;
    const double v = zi + beta * d - step * (pzi + beta * (pzi - (double)P[i]) - bi);
    const double a = fabs(v) - thr;
    const double m = 0.5 * (a + fabs(a));
    const double z = m - 2 * m * (double)(v < 0);
    next[i] = z;
    tm[i] = m;
    D32[i] = (float)(z - wdi);
  }
}

enum { CHUNK = 256 };

typedef struct {
  const double *Z, *W;
  const float *PZ, *P, *B, *Wd;
  double *next, *rowSums;
  float *D32;
  int64_t rows, cols, perTask;
  double beta, step, thr;
} StepJob;

/* Rows [t·perTask, …) of fista.ts acceptStep, operation for operation (see there): the terms a
 * chunk at a time, then added to the row's four sums one entry after another in index order, as
 * the TypeScript adds them; rowSums[4r..4r+3] = the row's (smooth, ‖Z − W‖², ‖W‖², ‖next‖₁). */
static void step_rows(void *ctx, int64_t t) {
  const StepJob *j = ctx;
  double ts[CHUNK], td[CHUNK], tw[CHUNK], tm[CHUNK];
  const int64_t r0 = t * j->perTask, r1 = r0 + j->perTask < j->rows ? r0 + j->perTask : j->rows, cols = j->cols;
  for (int64_t r = r0; r < r1; r++) {
    double s = 0, dd = 0, ww = 0, l1 = 0;
    for (int64_t c0 = 0; c0 < cols; c0 += CHUNK) {
      const int64_t len = cols - c0 < CHUNK ? cols - c0 : CHUNK, o = r * cols + c0;
      step_terms(j->Z + o, j->PZ + o, j->W + o, j->P + o, j->B + o, j->Wd + o, j->next + o, j->D32 + o, len,
                 j->beta, j->step, j->thr, ts, td, tw, tm);
      for (int64_t i = 0; i < len; i++) {
        s += ts[i];
        dd += td[i];
        ww += tw[i];
        l1 += tm[i];
      }
    }
    double *out = j->rowSums + 4 * r;
    out[0] = s;
    out[1] = dd;
    out[2] = ww;
    out[3] = l1;
  }
}

/* The whole pass: rows over the pool, then each sum over the rows in row order. */
static int accept_step(StepJob *j, double *sums) {
  j->rowSums = malloc((size_t)(j->rows > 0 ? 4 * j->rows : 1) * sizeof(double));
  if (!j->rowSums) return 0;
  j->perTask = rows_per_task(j->cols);
  prunelab_pool_run(step_rows, j, (j->rows + j->perTask - 1) / j->perTask);
  double total[4] = {0, 0, 0, 0};
  for (int64_t r = 0; r < j->rows; r++) for (int q = 0; q < 4; q++) total[q] += j->rowSums[4 * r + q];
  for (int q = 0; q < 4; q++) sums[q] = total[q];
  free(j->rowSums);
  return 1;
}

/* fistaAcceptStep(Z, PZ, W, P, B, Wd, next, D32, sums, rows, cols, beta, step, thr): Float64Array
 * Z, W, next, sums (4); Float32Array PZ, P, B, Wd, D32; all `[rows, cols]` row-major. */
napi_value fistaAcceptStep(napi_env env, napi_callback_info info) {
  size_t argc = 14;
  napi_value argv[14];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc != 14) { napi_throw_error(env, NULL, "fista-kernels: fistaAcceptStep takes 14 arguments"); return NULL; }
  int ok = 1;
  const int64_t rows = (int64_t)num(env, argv[9], &ok), cols = (int64_t)num(env, argv[10], &ok);
  const double beta = num(env, argv[11], &ok), step = num(env, argv[12], &ok), thr = num(env, argv[13], &ok);
  if (!ok || rows < 0 || cols < 0) { napi_throw_range_error(env, NULL, "fista-kernels: fistaAcceptStep: bad sizes"); return NULL; }
  const size_t n = (size_t)(rows * cols);
  const double *Z = typed(env, argv[0], napi_float64_array, n, &ok);
  const float *PZ = typed(env, argv[1], napi_float32_array, n, &ok);
  const double *W = typed(env, argv[2], napi_float64_array, n, &ok);
  const float *P = typed(env, argv[3], napi_float32_array, n, &ok);
  const float *B = typed(env, argv[4], napi_float32_array, n, &ok);
  const float *Wd = typed(env, argv[5], napi_float32_array, n, &ok);
  double *next = typed(env, argv[6], napi_float64_array, n, &ok);
  float *D32 = typed(env, argv[7], napi_float32_array, n, &ok);
  double *sums = typed(env, argv[8], napi_float64_array, 4, &ok);
  if (!ok) { napi_throw_range_error(env, NULL, "fista-kernels: fistaAcceptStep: arrays of the wrong type or too short"); return NULL; }
  StepJob job = {.Z = Z, .W = W, .PZ = PZ, .P = P, .B = B, .Wd = Wd, .next = next, .D32 = D32, .rows = rows, .cols = cols,
                 .beta = beta, .step = step, .thr = thr};
  if (!accept_step(&job, sums)) napi_throw_error(env, NULL, "fista-kernels: out of memory");
  return NULL;
}

/* ---- The exact per-row cut on |W| (masks.ts maskPerRow on cutMask's scores) ---- */

static int cmp_double(const void *x, const void *y) {
  const double a = *(const double *)x, b = *(const double *)y;
  return a < b ? -1 : a > b ? 1 : 0;
}

/* The value of rank k (0-based, ascending) of a[0..n) (consumed, as are b1 and b2, scratch as
 * long): three-way quickselect, out of place and without a data-dependent branch (as masks.ts
 * kthSmallest): each round copies every value to both the below-pivot and the above-pivot buffer
 * and advances each count by the comparison; a branching partition mispredicts on about half the
 * values. Median-of-three pivot; sorted outright after 64 rounds (bounded worst case). Any exact
 * selection gives the same value, and the mask depends on nothing else (ties are settled by index). */
static double kth_smallest(double *a, double *b1, double *b2, int64_t n, int64_t k) {
  double *bufs[3] = {a, b1, b2};
  int s = 0;
  int64_t len = n;
  for (int round = 0;; round++) {
    double *src = bufs[s];
    if (len <= 16 || round > 64) {
      qsort(src, (size_t)len, sizeof(double), cmp_double);
      return src[k];
    }
    double x = src[0], y = src[len / 2], z = src[len - 1], t;
    if (x > y) { t = x; x = y; y = t; }
    if (y > z) y = z;
    const double pivot = x > y ? x : y;
    double *less = bufs[(s + 1) % 3], *more = bufs[(s + 2) % 3];
    int64_t nl = 0, nm = 0;
    for (int64_t i = 0; i < len; i++) {
      const double v = src[i];
      less[nl] = v;
      more[nm] = v;
      nl += v < pivot;
      nm += v > pivot;
    }
    if (k < nl) { s = (s + 1) % 3; len = nl; }
    else if (k < len - nm) return pivot;
    else { k -= len - nm; s = (s + 2) % 3; len = nm; }
  }
}

/* One row: prune the k smallest |w| (ties: lower index first), as masks.ts maskPerRow and
 * pruneBelow, then out = w where kept, else +0 (fista.ts hardThreshold; out may be w). Returns
 * the row-local index of a NaN (nothing written), or -1. */
static int64_t cut_row(const double *w, int64_t cols, int64_t k, uint8_t *mask, double *out, double *scratch) {
  /* The copy also finds the minimum and how often it occurs: when at least k entries share it (a
   * row already cut), it is the k-th smallest value. */
  double min = INFINITY;
  int64_t atMin = 0;
  for (int64_t j = 0; j < cols; j++) {
    const double v = fabs(w[j]);
    if (v != v) return j;
    scratch[j] = v;
    if (v < min) { min = v; atMin = 0; }
    atMin += v == min;
  }
  const double t = atMin >= k ? min : kth_smallest(scratch, scratch + cols, scratch + 2 * cols, cols, k - 1);
  int64_t below = 0;
  for (int64_t j = 0; j < cols; j++) below += fabs(w[j]) < t;
  int64_t ties = k - below;
  for (int64_t j = 0; j < cols; j++) {
    const double v = fabs(w[j]);
    const int tie = (v == t) & (ties > 0);
    mask[j] = (uint8_t)(1 - ((v < t) | tie));
    ties -= tie;
  }
  for (int64_t j = 0; j < cols; j++) out[j] = mask[j] ? w[j] : 0.0;
  return -1;
}

typedef struct {
  const double *W;
  uint8_t *mask;
  double *out;
  int64_t rows, cols, k, perTask;
  int64_t *nanAt; /* per task: the flat index of its first NaN, or -1 (a NaN ends the task's rows) */
  atomic_int failed;
} CutJob;

static void cut_rows(void *ctx, int64_t t) {
  CutJob *j = ctx;
  const int64_t r0 = t * j->perTask, r1 = r0 + j->perTask < j->rows ? r0 + j->perTask : j->rows, cols = j->cols;
  j->nanAt[t] = -1;
  double *scratch = malloc((size_t)(cols > 0 ? 3 * cols : 1) * sizeof(double));
  if (!scratch) { j->failed = 1; return; }
  for (int64_t r = r0; r < r1; r++) {
    const int64_t c = cut_row(j->W + r * cols, cols, j->k, j->mask + r * cols, j->out + r * cols, scratch);
    if (c >= 0) { j->nanAt[t] = r * cols + c; break; }
  }
  free(scratch);
}

/* fistaCutRows(W, rows, cols, k, mask, out) -> -1 or the flat index of the first NaN: mask
 * (Uint8Array, 1 = keep) of the k smallest |W| of each row of the Float64Array W (0 < k <= cols),
 * and out (Float64Array, may be W itself) = W with the pruned entries +0. */
napi_value fistaCutRows(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc != 6) { napi_throw_error(env, NULL, "fista-kernels: fistaCutRows takes 6 arguments"); return NULL; }
  int ok = 1;
  const int64_t rows = (int64_t)num(env, argv[1], &ok), cols = (int64_t)num(env, argv[2], &ok), k = (int64_t)num(env, argv[3], &ok);
  if (!ok || rows < 0 || cols < 0 || k < 1 || k > cols) { napi_throw_range_error(env, NULL, "fista-kernels: fistaCutRows: bad sizes"); return NULL; }
  const double *W = typed(env, argv[0], napi_float64_array, (size_t)(rows * cols), &ok);
  uint8_t *mask = typed(env, argv[4], napi_uint8_array, (size_t)(rows * cols), &ok);
  double *out = typed(env, argv[5], napi_float64_array, (size_t)(rows * cols), &ok);
  if (!ok) { napi_throw_range_error(env, NULL, "fista-kernels: fistaCutRows: arrays of the wrong type or too short"); return NULL; }
  CutJob job = {.W = W, .mask = mask, .out = out, .rows = rows, .cols = cols, .k = k, .perTask = rows_per_task(cols)};
  const int64_t tasks = (rows + job.perTask - 1) / job.perTask;
  job.nanAt = malloc((size_t)(tasks > 0 ? tasks : 1) * sizeof(int64_t));
  if (!job.nanAt) { napi_throw_error(env, NULL, "fista-kernels: out of memory"); return NULL; }
  prunelab_pool_run(cut_rows, &job, tasks);
  int64_t nanAt = -1;
  for (int64_t t = 0; t < tasks && nanAt < 0; t++) nanAt = job.nanAt[t];
  free(job.nanAt);
  if (job.failed) { napi_throw_error(env, NULL, "fista-kernels: out of memory"); return NULL; }
  napi_value result;
  CHECK(napi_create_double(env, (double)nanAt, &result));
  return result;
}
