/*
 * Exact per-row mask selection in C, compiled into the OpenBLAS addon (scripts/build-native.sh)
 * and offered as `LinAlg.native`: `maskRows` is src/prune/masks.ts `maskPerRow` (the k smallest
 * scores of each row pruned, ties lower index first), `fistaCutRows` the same on |W| with
 * FISTAPruner's H(W) (methods/fistapruner/fista.ts `hardThreshold`).
 *
 * Hand-written because no library does this: an exact selection with PruneLab's tie rule (a
 * mask is a function of the scores alone, so any exact selection gives the same mask). Rows are
 * independent, so they are split over the addon's thread pool (prunelab_pool_run,
 * native/openblas-kernels.c) with the same mask for any thread count.
 */
#include <node_api.h>
#include <math.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include "napi-args.h"
#include "pool.h"

#define CHECK(call) do { if ((call) != napi_ok) { napi_throw_error(env, NULL, "row-masks: bad arguments"); return NULL; } } while (0)


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

/* A row's score: |w| for FISTAPruner's cut, w itself for maskRows (a constant at each call site). */
static inline __attribute__((always_inline)) double score(double w, int absolute) { return absolute ? fabs(w) : w; }

/* One row: prune the k smallest scores (ties: lower index first), as masks.ts maskPerRow and
 * pruneBelow; then, when `out` is given, out = w where kept, else +0 (fista.ts hardThreshold; out
 * may be w). Returns the row-local index of a NaN (nothing written), or -1. */
static inline __attribute__((always_inline)) int64_t cut_row(const double *w, int64_t cols, int64_t k, int absolute, uint8_t *mask,
    double *out, double *scratch) {
  /* The copy also finds the minimum and how often it occurs: when at least k entries share it (a
   * row already cut), it is the k-th smallest value. */
  double min = INFINITY;
  int64_t atMin = 0;
  for (int64_t j = 0; j < cols; j++) {
    const double v = score(w[j], absolute);
    if (v != v) return j;
    scratch[j] = v;
    if (v < min) { min = v; atMin = 0; }
    atMin += v == min;
  }
  const double t = atMin >= k ? min : kth_smallest(scratch, scratch + cols, scratch + 2 * cols, cols, k - 1);
  int64_t below = 0;
  for (int64_t j = 0; j < cols; j++) below += score(w[j], absolute) < t;
  int64_t ties = k - below;
  for (int64_t j = 0; j < cols; j++) {
    const double v = score(w[j], absolute);
    const int tie = (v == t) & (ties > 0);
    mask[j] = (uint8_t)(1 - ((v < t) | tie));
    ties -= tie;
  }
  if (out) for (int64_t j = 0; j < cols; j++) out[j] = mask[j] ? w[j] : 0.0;
  return -1;
}

typedef struct {
  const double *W;
  uint8_t *mask;
  double *out; /* NULL: the mask only */
  int64_t rows, cols, k, perTask;
  int absolute;
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
    const int64_t c = j->absolute ? cut_row(j->W + r * cols, cols, j->k, 1, j->mask + r * cols, j->out + r * cols, scratch)
                                  : cut_row(j->W + r * cols, cols, j->k, 0, j->mask + r * cols, NULL, scratch);
    if (c >= 0) { j->nanAt[t] = r * cols + c; break; }
  }
  free(scratch);
}

/* Runs the job's rows over the pool: -1 or the flat index of the first NaN; -2 out of memory. */
static int64_t run_cut(CutJob *job) {
  job->perTask = prunelab_rows_per_task(job->cols);
  const int64_t tasks = (job->rows + job->perTask - 1) / job->perTask;
  job->nanAt = malloc((size_t)(tasks > 0 ? tasks : 1) * sizeof(int64_t));
  if (!job->nanAt) return -2;
  prunelab_pool_run(cut_rows, job, tasks);
  int64_t nanAt = -1;
  for (int64_t t = 0; t < tasks && nanAt < 0; t++) nanAt = job->nanAt[t];
  free(job->nanAt);
  return job->failed ? -2 : nanAt;
}

/* fistaCutRows(W, rows, cols, k, mask, out) -> -1 or the flat index of the first NaN: mask
 * (Uint8Array, 1 = keep) of the k smallest |W| of each row of the Float64Array W (0 < k <= cols),
 * and out (Float64Array, may be W itself) = W with the pruned entries +0.
 * maskRows(scores, rows, cols, k, mask) -> the same, of the scores themselves (no out). */
static napi_value cut_rows_napi(napi_env env, napi_callback_info info, int absolute) {
  const size_t want = absolute ? 6 : 5;
  size_t argc = 6;
  napi_value argv[6];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc != want) { napi_throw_error(env, NULL, absolute ? "row-masks: fistaCutRows takes 6 arguments" : "row-masks: maskRows takes 5 arguments"); return NULL; }
  int ok = 1;
  const int64_t rows = (int64_t)num(env, argv[1], &ok), cols = (int64_t)num(env, argv[2], &ok), k = (int64_t)num(env, argv[3], &ok);
  if (!ok || rows < 0 || cols < 0 || k < 1 || k > cols) { napi_throw_range_error(env, NULL, "row-masks: bad sizes"); return NULL; }
  const double *W = typed(env, argv[0], napi_float64_array, (size_t)(rows * cols), &ok);
  uint8_t *mask = typed(env, argv[4], napi_uint8_array, (size_t)(rows * cols), &ok);
  double *out = absolute ? typed(env, argv[5], napi_float64_array, (size_t)(rows * cols), &ok) : NULL;
  if (!ok) { napi_throw_range_error(env, NULL, "row-masks: arrays of the wrong type or too short"); return NULL; }
  CutJob job = {.W = W, .mask = mask, .out = out, .rows = rows, .cols = cols, .k = k, .absolute = absolute};
  const int64_t nanAt = run_cut(&job);
  if (nanAt == -2) { napi_throw_error(env, NULL, "row-masks: out of memory"); return NULL; }
  napi_value result;
  CHECK(napi_create_double(env, (double)nanAt, &result));
  return result;
}

napi_value fistaCutRows(napi_env env, napi_callback_info info) { return cut_rows_napi(env, info, 1); }
napi_value maskRows(napi_env env, napi_callback_info info) { return cut_rows_napi(env, info, 0); }
