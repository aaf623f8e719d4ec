/*
 * FISTAPruner's per-iteration host pass (methods/fistapruner/fista.ts `acceptStep`) in C,
 * compiled into the OpenBLAS addon (scripts/build-native.sh) and offered as `LinAlg.native`
 * (its exact per-row cut is native/row-masks.c `fistaCutRows`).
 *
 * Hand-written because no library does these: the pass is a fused FISTA step (momentum point,
 * gradient step, soft threshold, objective and early-stop sums, float32 copy of the change) whose
 * float64 operations must be exactly those of the TypeScript, in the same order, so that the
 * iterates, objectives and masks do not change with the kernel (BLAS has no such fused step, and
 * its reductions sum in its own order). Compiled with -ffp-contract=off (no fused multiply-adds).
 *
 * It splits the rows over the addon's thread pool (prunelab_pool_run, native/openblas-kernels.c):
 * a row's values do not depend on any other row, and the pass's four sums are summed per row and
 * then over rows in row order, as the TypeScript sums them, so the results are the same for any
 * thread count and any split.
 */
#include <node_api.h>
#include <math.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "napi-args.h"
#include "pool.h"


#define CHECK(call) do { if ((call) != napi_ok) { napi_throw_error(env, NULL, "fista-kernels: bad arguments"); return NULL; } } while (0)

/* The `want` arguments of kernel `name` into argv, and the sizes `[rows, cols]` at argv[at],
 * argv[at + 1]; 0 (a JS error thrown) when either is wrong. */
static int row_kernel_args(napi_env env, napi_callback_info info, const char *name, size_t want, napi_value *argv, size_t at,
    int64_t *rows, int64_t *cols) {
  size_t argc = want;
  char msg[96];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != want) {
    snprintf(msg, sizeof msg, "fista-kernels: %s takes %zu arguments", name, want);
    napi_throw_error(env, NULL, msg);
    return 0;
  }
  int ok = 1;
  *rows = (int64_t)num(env, argv[at], &ok);
  *cols = (int64_t)num(env, argv[at + 1], &ok);
  if (!ok || *rows < 0 || *cols < 0) {
    snprintf(msg, sizeof msg, "fista-kernels: %s: bad sizes", name);
    napi_throw_range_error(env, NULL, msg);
    return 0;
  }
  return 1;
}

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

enum { CHUNK = 256, LANES = 8 };

/* A row's sums are summed in LANES lanes, as fista.ts sums them (`laneTotal`): the entry in column c
 * goes to lane c mod 8, each lane in column order, and the row's sum is
 * ((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7)). Eight independent chains vectorise (one
 * AVX-512 or two AVX2 adds per eight entries), where one chain per sum costs an add's latency an
 * entry. `t` starts at a column ≡ 0 (mod 8). */
__attribute__((target_clones("avx512f", "avx2", "default"), optimize("O3")))
static void lane_add(const double *restrict t, int64_t len, double *restrict lanes) {
  int64_t i = 0;
  for (; i + LANES <= len; i += LANES)
    for (int q = 0; q < LANES; q++) lanes[q] += t[i + q];
  for (; i < len; i++) lanes[i % LANES] += t[i];
}

static double lane_total(const double *l) {
  return ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));
}

typedef struct {
  const double *Z, *W;
  const float *PZ, *P, *B, *Wd;
  double *next, *rowSums;
  float *D32;
  int64_t rows, cols, perTask;
  double beta, step, thr;
} StepJob;

/* Rows [t·perTask, …) of fista.ts acceptStep, operation for operation (see there): the terms a
 * chunk at a time, then added to the row's four sums in lanes (lane_add), as the TypeScript adds
 * them; rowSums[4r..4r+3] = the row's (smooth, ‖Z − W‖², ‖W‖², ‖next‖₁). */
static void step_rows(void *ctx, int64_t t) {
  const StepJob *j = ctx;
  double ts[CHUNK], td[CHUNK], tw[CHUNK], tm[CHUNK];
  const int64_t r0 = t * j->perTask, r1 = r0 + j->perTask < j->rows ? r0 + j->perTask : j->rows, cols = j->cols;
  for (int64_t r = r0; r < r1; r++) {
    double lanes[4][LANES] = {{0}};
    for (int64_t c0 = 0; c0 < cols; c0 += CHUNK) {
      const int64_t len = cols - c0 < CHUNK ? cols - c0 : CHUNK, o = r * cols + c0;
      step_terms(j->Z + o, j->PZ + o, j->W + o, j->P + o, j->B + o, j->Wd + o, j->next + o, j->D32 + o, len,
                 j->beta, j->step, j->thr, ts, td, tw, tm);
      lane_add(ts, len, lanes[0]);
      lane_add(td, len, lanes[1]);
      lane_add(tw, len, lanes[2]);
      lane_add(tm, len, lanes[3]);
    }
    double *out = j->rowSums + 4 * r;
    for (int q = 0; q < 4; q++) out[q] = lane_total(lanes[q]);
  }
}

/* The whole pass: rows over the pool, then each sum over the rows in row order. */
static int accept_step(StepJob *j, double *sums) {
  j->rowSums = malloc((size_t)(j->rows > 0 ? 4 * j->rows : 1) * sizeof(double));
  if (!j->rowSums) return 0;
  j->perTask = prunelab_rows_per_task(j->cols);
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
  napi_value argv[14];
  int64_t rows, cols;
  if (!row_kernel_args(env, info, "fistaAcceptStep", 14, argv, 9, &rows, &cols)) return NULL;
  int ok = 1;
  const double beta = num(env, argv[11], &ok), step = num(env, argv[12], &ok), thr = num(env, argv[13], &ok);
  if (!ok) { napi_throw_range_error(env, NULL, "fista-kernels: fistaAcceptStep: bad sizes"); return NULL; }
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


/* ---- The solver's other passes over `[rows, cols]` and `[n, n]` (fista.ts `change32`,
 * `errorSums`, `prepare`): the same float64 operations as the TypeScript, rows over the pool. ---- */

typedef struct {
  const double *X, *WK;
  const float *Wd, *PX, *B, *PK;
  float *D32;
  double *rowSums;
  int64_t rows, cols, perTask;
} RowsJob;

static int64_t task_end(const RowsJob *j, int64_t t) {
  const int64_t r1 = (t + 1) * j->perTask;
  return r1 < j->rows ? r1 : j->rows;
}

/* D32 = X − Wd rounded to float32 (change32). */
static void change_rows(void *ctx, int64_t t) {
  const RowsJob *j = ctx;
  for (int64_t i = t * j->perTask * j->cols, end = task_end(j, t) * j->cols; i < end; i++) j->D32[i] = (float)(j->X[i] - (double)j->Wd[i]);
}

/* Per row: Σ (X − Wd)(½PX − B) and, with WK, Σ (X − WK)(PX − PK), each in lanes (lane_add; errorSums). */
static void error_rows(void *ctx, int64_t t) {
  const RowsJob *j = ctx;
  double ts[CHUNK], te[CHUNK];
  for (int64_t r = t * j->perTask, r1 = task_end(j, t); r < r1; r++) {
    double ls[LANES] = {0}, le[LANES] = {0};
    for (int64_t c0 = 0; c0 < j->cols; c0 += CHUNK) {
      const int64_t len = j->cols - c0 < CHUNK ? j->cols - c0 : CHUNK, o = r * j->cols + c0;
      for (int64_t i = 0; i < len; i++) {
        const double x = j->X[o + i], px = j->PX[o + i];
        ts[i] = (x - (double)j->Wd[o + i]) * (0.5 * px - (double)j->B[o + i]);
        if (j->WK) te[i] = (x - j->WK[o + i]) * (px - (double)j->PK[o + i]);
      }
      lane_add(ts, len, ls);
      if (j->WK) lane_add(te, len, le);
    }
    j->rowSums[2 * r] = lane_total(ls);
    j->rowSums[2 * r + 1] = lane_total(le);
  }
}

static void run_rows(RowsJob *j, void (*fn)(void *, int64_t)) {
  j->perTask = prunelab_rows_per_task(j->cols);
  prunelab_pool_run(fn, j, (j->rows + j->perTask - 1) / j->perTask);
}

/* fistaChange(X, Wd, D32, rows, cols): Float64Array X; Float32Array Wd, D32. */
napi_value fistaChange(napi_env env, napi_callback_info info) {
  napi_value argv[5];
  int64_t rows, cols;
  if (!row_kernel_args(env, info, "fistaChange", 5, argv, 3, &rows, &cols)) return NULL;
  int ok = 1;
  const size_t n = (size_t)(rows * cols);
  RowsJob job = {.X = typed(env, argv[0], napi_float64_array, n, &ok), .Wd = typed(env, argv[1], napi_float32_array, n, &ok),
                 .D32 = typed(env, argv[2], napi_float32_array, n, &ok), .rows = rows, .cols = cols};
  if (!ok) { napi_throw_range_error(env, NULL, "fista-kernels: fistaChange: arrays of the wrong type or too short"); return NULL; }
  run_rows(&job, change_rows);
  return NULL;
}

/* fistaErrors(X, PX, Wd, B, WK, PK, sums, rows, cols): Float64Array X, sums (2) and WK (or null);
 * Float32Array PX, Wd, B and PK (or null, with WK). sums = [Σ_r Σ (X − Wd)(½PX − B),
 * Σ_r Σ (X − WK)(PX − PK) or 0], summed per row, then over rows in row order. */
napi_value fistaErrors(napi_env env, napi_callback_info info) {
  napi_value argv[9];
  int64_t rows, cols;
  if (!row_kernel_args(env, info, "fistaErrors", 9, argv, 7, &rows, &cols)) return NULL;
  int ok = 1;
  const size_t n = (size_t)(rows * cols);
  napi_valuetype wkType;
  CHECK(napi_typeof(env, argv[4], &wkType));
  const int rounding = wkType != napi_null && wkType != napi_undefined;
  RowsJob job = {.X = typed(env, argv[0], napi_float64_array, n, &ok), .PX = typed(env, argv[1], napi_float32_array, n, &ok),
                 .Wd = typed(env, argv[2], napi_float32_array, n, &ok), .B = typed(env, argv[3], napi_float32_array, n, &ok),
                 .rows = rows, .cols = cols};
  if (rounding) {
    job.WK = typed(env, argv[4], napi_float64_array, n, &ok);
    job.PK = typed(env, argv[5], napi_float32_array, n, &ok);
  }
  double *sums = typed(env, argv[6], napi_float64_array, 2, &ok);
  if (!ok) { napi_throw_range_error(env, NULL, "fista-kernels: fistaErrors: arrays of the wrong type or too short"); return NULL; }
  job.rowSums = malloc((size_t)(rows > 0 ? 2 * rows : 1) * sizeof(double));
  if (!job.rowSums) { napi_throw_error(env, NULL, "fista-kernels: out of memory"); return NULL; }
  run_rows(&job, error_rows);
  double s = 0, e = 0;
  for (int64_t r = 0; r < rows; r++) {
    s += job.rowSums[2 * r];
    e += job.rowSums[2 * r + 1];
  }
  sums[0] = s;
  sums[1] = e;
  free(job.rowSums);
  return NULL;
}

typedef struct {
  const double *g, *c, *h;
  float *G32, *CmG, *M;
  int64_t n, perTask;
  uint8_t *nonzero;
} GramJob;

/* Rows [t·perTask, …) of prepare's symmetrise and differences: s = ½(g_ij + g_ji) off the
 * diagonal (g_ii on it), C − s and (s − 2C) + H_d in float64, each stored rounded to float32.
 * Row by row (measured: 64-column blocks, with or without a transposed copy, were slower; the
 * column of g is read with a constant stride). */
static void gram_rows(void *ctx, int64_t t) {
  const GramJob *j = ctx;
  const int64_t n = j->n, r0 = t * j->perTask, r1 = r0 + j->perTask < n ? r0 + j->perTask : n;
  int nz = 0;
  for (int64_t i = r0; i < r1; i++) {
    for (int64_t col = 0; col < n; col++) {
      const int64_t at = i * n + col;
      const double s = i == col ? j->g[at] : 0.5 * (j->g[at] + j->g[col * n + i]);
      const double c = j->c[at];
      const double d = c - s, e = s - 2 * c + j->h[at];
      j->G32[at] = (float)s;
      j->CmG[at] = (float)d;
      j->M[at] = (float)e;
      nz |= (d != 0) | (e != 0);
    }
  }
  j->nonzero[t] = (uint8_t)nz;
}

/* fistaPrepareGram(gram, cross, denseGram, n, G32, CmG, M) -> 1 when C − G or G − 2C + H_d has a
 * nonzero entry, else 0: Float64Array gram, cross, denseGram (the engine's statistics); Float32Array
 * G32, CmG, M; all `[n, n]` (see gram_rows). */
napi_value fistaPrepareGram(napi_env env, napi_callback_info info) {
  size_t argc = 7;
  napi_value argv[7];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc != 7) { napi_throw_error(env, NULL, "fista-kernels: fistaPrepareGram takes 7 arguments"); return NULL; }
  int ok = 1;
  const int64_t n = (int64_t)num(env, argv[3], &ok);
  if (!ok || n < 0) { napi_throw_range_error(env, NULL, "fista-kernels: fistaPrepareGram: bad size"); return NULL; }
  const size_t nn = (size_t)(n * n);
  GramJob job = {.g = typed(env, argv[0], napi_float64_array, nn, &ok), .c = typed(env, argv[1], napi_float64_array, nn, &ok),
                 .h = typed(env, argv[2], napi_float64_array, nn, &ok), .G32 = typed(env, argv[4], napi_float32_array, nn, &ok),
                 .CmG = typed(env, argv[5], napi_float32_array, nn, &ok), .M = typed(env, argv[6], napi_float32_array, nn, &ok), .n = n};
  if (!ok) { napi_throw_range_error(env, NULL, "fista-kernels: fistaPrepareGram: arrays of the wrong type or too short"); return NULL; }
  job.perTask = prunelab_rows_per_task(n);
  const int64_t tasks = (n + job.perTask - 1) / job.perTask;
  job.nonzero = calloc((size_t)(tasks > 0 ? tasks : 1), 1);
  if (!job.nonzero) { napi_throw_error(env, NULL, "fista-kernels: out of memory"); return NULL; }
  prunelab_pool_run(gram_rows, &job, tasks);
  int nz = 0;
  for (int64_t t = 0; t < tasks; t++) nz |= job.nonzero[t];
  free(job.nonzero);
  napi_value out;
  CHECK(napi_create_int32(env, nz, &out));
  return out;
}
