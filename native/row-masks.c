/*
 * Exact per-row mask selection in C, compiled into the OpenBLAS addon (scripts/build-native.sh)
 * and offered as `LinAlg.native`: `maskRows` is src/prune/masks.ts `maskPerRow` (the k smallest
 * scores of each row pruned, ties lower index first), `maskRowsScaled` the same of Wanda's
 * scores |W_ij| * scale_j made row by row, `fistaCutRows` the same on |W| with
 * FISTAPruner's H(W) (methods/fistapruner/fista.ts `hardThreshold`). Beside them, the engine's
 * own mask work on the pool: `maskedCopy` (a decision applied to a weight, zeros counted) and
 * `countZeros` (the report's count), which ran on the main thread alone.
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
#include <string.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif
#include "napi-args.h"
#include "pool.h"

#define CHECK(call) do { if ((call) != napi_ok) { napi_throw_error(env, NULL, "row-masks: bad arguments"); return NULL; } } while (0)


/* Whether this CPU has AVX-512 (set by each cut call before its rows go to the pool; the selection's speed only). */
static int hasAvx512 = 0;

static int cmp_double(const void *x, const void *y) {
  const double a = *(const double *)x, b = *(const double *)y;
  return a < b ? -1 : a > b ? 1 : 0;
}

/* Median of three of src[0], src[len/2], src[len − 1]: the pivot of a round. */
static inline double pivot_of(const double *src, int64_t len) {
  double x = src[0], y = src[len / 2], z = src[len - 1], t;
  if (x > y) { t = x; x = y; y = t; }
  if (y > z) y = z;
  return x > y ? x : y;
}

/* A selection round's start: with 16 values or fewer left, or after 64 rounds (a bounded worst
 * case), src is sorted and *value is rank k (returns 1); else *value is the round's pivot. */
static inline int round_start(double *src, int64_t len, int round, int64_t k, double *value) {
  if (len <= 16 || round > 64) {
    qsort(src, (size_t)len, sizeof(double), cmp_double);
    *value = src[k];
    return 1;
  }
  *value = pivot_of(src, len);
  return 0;
}

/* With AVX-512 a round first counts the values below and above the pivot (a loop the compiler
 * vectorises), then compresses only the side that holds rank k into the other buffer, eight
 * values a store: about twice as fast as the scalar round below on 512-wide rows. Returns the
 * value of rank k as kth_smallest does (the same value: any exact selection finds it). */
#if defined(__x86_64__)
__attribute__((target("avx512f"), optimize("O3")))
static double kth_smallest_avx512(double *a, double *b, int64_t n, int64_t k) {
  double *bufs[2] = {a, b};
  int s = 0;
  int64_t len = n;
  for (int round = 0;; round++) {
    double *src = bufs[s], pivot;
    if (round_start(src, len, round, k, &pivot)) return pivot;
    int64_t nl = 0, nm = 0;
    for (int64_t i = 0; i < len; i++) {
      nl += src[i] < pivot;
      nm += src[i] > pivot;
    }
    const int below = k < nl;
    if (!below && k < len - nm) return pivot;
    if (!below) k -= len - nm;
    double *dst = bufs[1 - s];
    const __m512d p = _mm512_set1_pd(pivot);
    int64_t c = 0, i = 0;
    for (; i + 8 <= len; i += 8) {
      const __m512d v = _mm512_loadu_pd(src + i);
      const __mmask8 m = below ? _mm512_cmp_pd_mask(v, p, _CMP_LT_OQ) : _mm512_cmp_pd_mask(v, p, _CMP_GT_OQ);
      _mm512_mask_compressstoreu_pd(dst + c, m, v);
      c += __builtin_popcount(m);
    }
    for (; i < len; i++) {
      dst[c] = src[i];
      c += below ? src[i] < pivot : src[i] > pivot;
    }
    len = below ? nl : nm;
    s = 1 - s;
  }
}
#endif

/* The value of rank k (0-based, ascending) of a[0..n) (consumed, as are b1 and b2, scratch as
 * long): three-way quickselect, out of place and without a data-dependent branch (as masks.ts
 * kthSmallest): each round copies every value to both the below-pivot and the above-pivot buffer
 * and advances each count by the comparison; a branching partition mispredicts on about half the
 * values. Median-of-three pivot; sorted outright after 64 rounds (bounded worst case). Any exact
 * selection gives the same value, and the mask depends on nothing else (ties are settled by index). */
static double kth_smallest(double *a, double *b1, double *b2, int64_t n, int64_t k) {
#if defined(__x86_64__)
  if (hasAvx512) return kth_smallest_avx512(a, b1, n, k);
#endif
  double *bufs[3] = {a, b1, b2};
  int s = 0;
  int64_t len = n;
  for (int round = 0;; round++) {
    double *src = bufs[s], pivot;
    if (round_start(src, len, round, k, &pivot)) return pivot;
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
  int64_t nan = -1;
  for (int64_t j = 0; j < cols; j++) {
    const double v = score(w[j], absolute);
    nan = v != v && nan < 0 ? j : nan;
    scratch[j] = v;
    /* Without a branch (a new minimum on random data mispredicts): the count restarts at a new minimum. */
    const int lower = v < min;
    atMin = lower ? 0 : atMin;
    min = lower ? v : min;
    atMin += v == min;
  }
  if (nan >= 0) return nan;
  const double t = atMin >= k ? min : kth_smallest(scratch, scratch + cols, scratch + 2 * cols, cols, k - 1);
  int64_t below = 0, equal = 0;
  for (int64_t j = 0; j < cols; j++) {
    const double v = score(w[j], absolute);
    below += v < t;
    equal += v == t;
  }
  int64_t ties = k - below;
  if (ties == equal) {
    /* Every value equal to t is pruned (the usual case: t occurs once): no running count. */
    for (int64_t j = 0; j < cols; j++) mask[j] = (uint8_t)!(score(w[j], absolute) <= t);
  } else {
    for (int64_t j = 0; j < cols; j++) {
      const double v = score(w[j], absolute);
      const int tie = (v == t) & (ties > 0);
      mask[j] = (uint8_t)(1 - ((v < t) | tie));
      ties -= tie;
    }
  }
  /* out = w where kept, +0 where pruned: the bits masked (a branch on a random mask mispredicts). */
  if (out) {
    uint64_t bits;
    for (int64_t j = 0; j < cols; j++) {
      memcpy(&bits, w + j, sizeof bits);
      bits &= (uint64_t)0 - (uint64_t)mask[j];
      memcpy(out + j, &bits, sizeof bits);
    }
  }
  return -1;
}

typedef struct {
  const double *W;
  /* maskRowsScaled: the scores |W32_ij| * scale_j of each row, made in float64 into a row buffer (W unused). */
  const float *W32;
  const double *scale;
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
  /* Three rows of selection scratch, and the row's scores where they are made here. */
  double *scratch = malloc((size_t)(cols > 0 ? (j->scale ? 4 : 3) * cols : 1) * sizeof(double)), *rowScores = scratch + 3 * cols;
  if (!scratch) { j->failed = 1; return; }
  for (int64_t r = r0; r < r1; r++) {
    if (j->scale) {
      const float *w = j->W32 + r * cols;
      for (int64_t c = 0; c < cols; c++) rowScores[c] = fabs((double)w[c]) * j->scale[c];
    }
    const int64_t c = j->absolute ? cut_row(j->W + r * cols, cols, j->k, 1, j->mask + r * cols, j->out + r * cols, scratch)
                                  : cut_row(j->scale ? rowScores : j->W + r * cols, cols, j->k, 0, j->mask + r * cols, NULL, scratch);
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

/* A cut's N-API ending: the job run over the pool (the CPU's vector width noted first), and -1 or
 * the flat index of its first NaN returned; out of memory thrown. */
static napi_value cut_result(napi_env env, CutJob *job) {
#if defined(__x86_64__)
  __builtin_cpu_init();
  hasAvx512 = __builtin_cpu_supports("avx512f");
#endif
  const int64_t nanAt = run_cut(job);
  if (nanAt == -2) { napi_throw_error(env, NULL, "row-masks: out of memory"); return NULL; }
  napi_value result;
  CHECK(napi_create_double(env, (double)nanAt, &result));
  return result;
}

/* fistaCutRows(W, rows, cols, k, mask, out) -> -1 or the flat index of the first NaN: mask
 * (Uint8Array, 1 = keep) of the k smallest |W| of each row of the Float64Array W (0 < k <= cols),
 * and out (Float64Array, may be W itself) = W with the pruned entries +0.
 * maskRows(scores, rows, cols, k, mask) -> the same, of the scores themselves (no out). */
static napi_value cut_rows_napi(napi_env env, napi_callback_info info, int absolute) {
  napi_value argv[6];
  if (!exact_args(env, info, argv, absolute ? 6 : 5, absolute ? "row-masks: fistaCutRows takes 6 arguments" : "row-masks: maskRows takes 5 arguments")) return NULL;
  int ok = 1;
  const int64_t rows = (int64_t)num(env, argv[1], &ok), cols = (int64_t)num(env, argv[2], &ok), k = (int64_t)num(env, argv[3], &ok);
  if (!ok || rows < 0 || cols < 0 || k < 1 || k > cols) { napi_throw_range_error(env, NULL, "row-masks: bad sizes"); return NULL; }
  const double *W = typed(env, argv[0], napi_float64_array, (size_t)(rows * cols), &ok);
  uint8_t *mask = typed(env, argv[4], napi_uint8_array, (size_t)(rows * cols), &ok);
  double *out = absolute ? typed(env, argv[5], napi_float64_array, (size_t)(rows * cols), &ok) : NULL;
  if (!ok) { napi_throw_range_error(env, NULL, "row-masks: arrays of the wrong type or too short"); return NULL; }
  CutJob job = {.W = W, .mask = mask, .out = out, .rows = rows, .cols = cols, .k = k, .absolute = absolute};
  return cut_result(env, &job);
}

napi_value fistaCutRows(napi_env env, napi_callback_info info) { return cut_rows_napi(env, info, 1); }
napi_value maskRows(napi_env env, napi_callback_info info) { return cut_rows_napi(env, info, 0); }

/* maskRowsScaled(W, scale, rows, cols, k, mask) -> -1 or the flat index of the first NaN score:
 * maskRows of the scores |W_ij| * scale_j (W a Float32Array, scale a Float64Array of cols; each
 * score one float64 product, as src/prune/scores.ts wandaScores makes it), each row's scores made
 * in its task instead of a [rows, cols] array first. */
napi_value maskRowsScaled(napi_env env, napi_callback_info info) {
  napi_value argv[6];
  if (!exact_args(env, info, argv, 6, "row-masks: maskRowsScaled takes 6 arguments")) return NULL;
  int ok = 1;
  const int64_t rows = (int64_t)num(env, argv[2], &ok), cols = (int64_t)num(env, argv[3], &ok), k = (int64_t)num(env, argv[4], &ok);
  if (!ok || rows < 0 || cols < 0 || k < 1 || k > cols) { napi_throw_range_error(env, NULL, "row-masks: bad sizes"); return NULL; }
  const float *W32 = typed(env, argv[0], napi_float32_array, (size_t)(rows * cols), &ok);
  const double *scale = typed(env, argv[1], napi_float64_array, (size_t)cols, &ok);
  uint8_t *mask = typed(env, argv[5], napi_uint8_array, (size_t)(rows * cols), &ok);
  if (!ok) { napi_throw_range_error(env, NULL, "row-masks: arrays of the wrong type or too short"); return NULL; }
  CutJob job = {.W32 = W32, .scale = scale, .mask = mask, .rows = rows, .cols = cols, .k = k};
  return cut_result(env, &job);
}

/* ---- a mask applied, and zeros counted ---- */

/* Entries per pool task: a count is exact whichever thread takes a block. */
enum { APPLY_BLOCK = 1 << 16 };

typedef struct {
  const uint32_t *w;    /* float32 bits */
  const uint8_t *mask;  /* NULL: count only */
  uint32_t *out;
  int64_t n;
  int64_t *zeros;       /* per task */
} ApplyJob;

/* out = w where mask != 0, else +0 (on the bits, branch-free: it vectorises); zeros: entries ±0 in the result. */
static void apply_block(void *ctx, int64_t t) {
  const ApplyJob *j = ctx;
  const int64_t i0 = t * APPLY_BLOCK, i1 = i0 + APPLY_BLOCK < j->n ? i0 + APPLY_BLOCK : j->n;
  int64_t z = 0;
  if (j->mask) {
    for (int64_t i = i0; i < i1; i++) {
      const uint32_t b = j->w[i] & (0u - (uint32_t)(j->mask[i] != 0));
      j->out[i] = b;
      z += (b & 0x7fffffffu) == 0;
    }
  } else {
    for (int64_t i = i0; i < i1; i++) z += (j->w[i] & 0x7fffffffu) == 0;
  }
  j->zeros[t] = z;
}

static int64_t run_apply(ApplyJob *job) {
  const int64_t tasks = (job->n + APPLY_BLOCK - 1) / APPLY_BLOCK;
  int64_t local[64];
  job->zeros = tasks <= 64 ? local : malloc((size_t)tasks * sizeof(int64_t));
  if (!job->zeros) return -1;
  prunelab_pool_run(apply_block, job, tasks);
  int64_t z = 0;
  for (int64_t t = 0; t < tasks; t++) z += job->zeros[t];
  if (job->zeros != local) free(job->zeros);
  return z;
}

/* maskedCopy(w, mask, out) -> zeros: out (Float32Array) = w (Float32Array) where mask (Uint8Array)
 * is nonzero, else +0, all of w's length; returns how many entries of out are ±0.
 * countZeros(x) -> how many entries of the Float32Array x are ±0. */
static napi_value apply_napi(napi_env env, napi_callback_info info, int copy) {
  napi_value argv[3];
  if (!exact_args(env, info, argv, copy ? 3 : 1, copy ? "row-masks: maskedCopy takes 3 arguments" : "row-masks: countZeros takes 1 argument")) return NULL;
  napi_typedarray_type type;
  size_t n = 0;
  void *w = NULL;
  if (napi_get_typedarray_info(env, argv[0], &type, &n, &w, NULL, NULL) != napi_ok || type != napi_float32_array) {
    napi_throw_type_error(env, NULL, "row-masks: the weights must be a Float32Array");
    return NULL;
  }
  int ok = 1;
  const uint8_t *mask = copy ? typed(env, argv[1], napi_uint8_array, n, &ok) : NULL;
  uint32_t *out = copy ? typed(env, argv[2], napi_float32_array, n, &ok) : NULL;
  if (!ok) { napi_throw_range_error(env, NULL, "row-masks: the mask or out is of the wrong type or shorter than the weights"); return NULL; }
  ApplyJob job = {.w = w, .mask = mask, .out = out, .n = (int64_t)n};
  const int64_t zeros = run_apply(&job);
  if (zeros < 0) { napi_throw_error(env, NULL, "row-masks: out of memory"); return NULL; }
  napi_value result;
  CHECK(napi_create_double(env, (double)zeros, &result));
  return result;
}

napi_value maskedCopy(napi_env env, napi_callback_info info) { return apply_napi(env, info, 1); }
napi_value countZeros(napi_env env, napi_callback_info info) { return apply_napi(env, info, 0); }
