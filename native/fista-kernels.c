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
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "napi-args.h"
#include "pool.h"


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

