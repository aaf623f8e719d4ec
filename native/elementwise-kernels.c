/*
 * The forward pass's non-product kernels for the WebAssembly backend: elementwise Add / Sub /
 * Multiply (same shape, scalar, a repeated trailing block, a value per row), Square, Rsqrt,
 * Sigmoid, Exp, Mean / Softmax over the last axis, Sum over leading or trailing axes, two forms
 * of Transpose, and four fused kernels of the decoder block: RoPE, RMSNorm, SiLU(gate) * up and
 * grouped attention, each in the float32 operations of the kernels it replaces (the attention's
 * products by the addon's own tiled product, native/gemm.h) (src/backend/native-elementwise.ts).
 *
 * Hand-written because these must run in place on the WebAssembly heap (operands by element
 * offset), split over the addon's own thread pool (native/openblas-kernels.c) with results that do
 * not depend on the thread count, and no library offers that: BLAS has no elementwise or softmax
 * kernels, and the wasm backend's own (XNNPACK) ones are single-threaded WebAssembly SIMD-128.
 *
 * Work is cut into blocks fixed by the shape alone (whole rows for the row kernels), each block
 * computed by the same code whichever thread takes it, so results are bit-identical for any
 * thread count. Vector width: the loops (native/elementwise-body.h) are compiled for AVX-512, AVX2
 * and the x86-64 baseline and picked by the running CPU, not the build machine's. The code is built with -ffp-contract=off and
 * the reductions keep 16 float64 partial sums in a fixed order, so every clone computes the same IEEE
 * operations: the same bits on any x86 CPU. Add/Sub/Multiply/Square/Rsqrt are the correctly
 * rounded operations the wasm kernels do (bit-identical to them); exp is Cody-Waite reduction with
 * Cephes's degree-5 polynomial (about 1 ulp), sigmoid and softmax are built on it.
 */
#include <node_api.h>
#include <math.h>
#include <stdint.h>
#include <string.h>
#include "pool.h"
#include "gemm.h"
#include <stdlib.h>
#include <pthread.h>


/* Below this many elements a kernel runs in the calling thread: waking the pool costs more. No
 * per-op cost factor: a helper taking part of a small kernel reads inputs the caller has just
 * written and leaves outputs the caller reads next, so the lines cross between cores both ways, and
 * that traffic grows with the elements, not with the arithmetic on them. Measured on an AMD EPYC
 * (Zen 3) VM, 2 vCPUs, one process alternating settings over 30 rounds: stories260K's 128-token
 * prefill on 2 threads 18.2k tokens/s when 2^15 elements times a cost (8 for SiLU, sigmoid and exp,
 * 10 for softmax) went to the pool, 25.1k with 2^15 elements and attention's rule below, 24.1k on
 * one thread. */
static const int64_t POOL_MIN_WORK = 1 << 15;
/* Elements per block handed to a thread (whole rows for the row kernels). */
static const int64_t BLOCK = 1 << 13;


enum { OP_ADD, OP_SUB, OP_MUL, OP_RSUB, OP_SILU_MUL }; /* binary; RSUB: b - a with a the full operand; SILU_MUL: (a * sigmoid(a)) * b, same shapes only */
enum { B_SAME, B_SCALAR, B_TILE, B_COLUMN };            /* how b is laid over the output */
enum { U_SQUARE, U_RSQRT, U_SIGMOID, U_EXP };           /* unary */
enum { R_MEAN, R_SOFTMAX, R_RMSNORM };                 /* over the last axis */

/* ---- elementwise ---- */

typedef struct {
  const float *a, *b;
  float *out;
  int64_t n, inner; /* TILE: b's length (period); COLUMN: elements per b value */
  int op, mode;
} Binary;

typedef struct {
  const float *x;
  float *out;
  int64_t n;
  int op;
} Unary;

/* ---- rows: reductions over the last axis, one row by one thread ---- */

enum { LANES = 16 };

/* GCC vector types for the reductions' 16 lanes, in 32-byte pieces (one AVX register, two SSE):
 * the lanes and the order they are combined in are the same on every CPU. */
typedef float v4f __attribute__((vector_size(16)));
typedef double v4d __attribute__((vector_size(32)));
typedef float v8f __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));

typedef struct {
  const float *x;
  float *out;
  int64_t rows, cols;
  int op;
  const float *w; /* RMSNORM: the scale, `cols` values */
  float eps;      /* RMSNORM */
  const float *mask; /* SOFTMAX: added to each row first (row r takes mask row r mod maskRows), or NULL */
  int64_t maskRows;
} Rows;

/* RoPE over rows of `width` (heads x head dims): out = x * cos + x[partner] * sin, the tables'
 * row (r mod T) for row r, partner swapping the two halves of every block of 2 * span dims. */
typedef struct {
  const float *x, *cos, *sin;
  float *out;
  int64_t T, width, span;
} Rope;

/* ---- the loops, once per vector width, picked by the CPU at load ---- */

#if defined(__x86_64__)
#define EW_TARGET __attribute__((target("avx512f")))
#define EW(name) name##_avx512
#include "elementwise-body.h"
#undef EW_TARGET
#undef EW
#define EW_TARGET __attribute__((target("avx2")))
#define EW(name) name##_avx2
#include "elementwise-body.h"
#undef EW_TARGET
#undef EW
#endif
#define EW_TARGET
#define EW(name) name##_base
#include "elementwise-body.h"
#undef EW_TARGET
#undef EW

typedef struct {
  const char *name;
  void (*binary)(const Binary *, int64_t, int64_t);
  void (*unary)(const Unary *, int64_t, int64_t);
  void (*rows)(const Rows *, int64_t, int64_t);
  void (*rope)(const Rope *, int64_t, int64_t);
} Width;

#if defined(__x86_64__)
static const Width WIDTHS[] = {
  {"avx512f", binary_range_avx512, unary_range_avx512, rows_range_avx512, rope_range_avx512},
  {"avx2", binary_range_avx2, unary_range_avx2, rows_range_avx2, rope_range_avx2},
  {"sse2", binary_range_base, unary_range_base, rows_range_base, rope_range_base},
};
#else
static const Width WIDTHS[] = {{"baseline", binary_range_base, unary_range_base, rows_range_base, rope_range_base}};
#endif
static const Width *_Atomic width = NULL;

static const Width *pick_width(void) {
  const Width *w = width;
  if (w) return w;
#if defined(__x86_64__)
  __builtin_cpu_init();
  w = &WIDTHS[__builtin_cpu_supports("avx512f") ? 0 : __builtin_cpu_supports("avx2") ? 1 : 2];
#else
  w = &WIDTHS[0];
#endif
  width = w;
  return w;
}

/* ---- blocks over the pool ---- */

typedef struct {
  int kind; /* 0 binary, 1 unary, 2 rows, 3 rope */
  const void *k;
  int64_t total, unit, perBlock; /* units (rows of `unit` elements, or elements), and how many a block takes */
} Split;

static void run_block(void *ctx, int64_t t) {
  const Split *s = ctx;
  const int64_t i0 = t * s->perBlock, i1 = i0 + s->perBlock < s->total ? i0 + s->perBlock : s->total;
  const Width *w = pick_width();
  if (s->kind == 0) w->binary(s->k, i0 * s->unit, i1 * s->unit);
  else if (s->kind == 1) w->unary(s->k, i0, i1);
  else if (s->kind == 2) w->rows(s->k, i0, i1);
  else w->rope(s->k, i0, i1);
}

/* `total` units of `unit` elements each (a row, or 1), in the calling thread when `pool` is 0 or the
 * work is small, else on the pool in blocks of about BLOCK elements in whole units. */
static void split_run(int kind, const void *k, int64_t total, int64_t unit, int pool) {
  Split s = {kind, k, total, unit, BLOCK / unit > 0 ? BLOCK / unit : 1};
  const int64_t blocks = (total + s.perBlock - 1) / s.perBlock;
  if (!pool || blocks <= 1 || total * unit < POOL_MIN_WORK) {
    s.perBlock = total;
    run_block(&s, 0);
    return;
  }
  prunelab_pool_run(run_block, &s, blocks);
}

/* ---- sums and transposes: bit-identical to the wasm kernels, which sum in one running float ---- */

/* Sums over the leading (COLS: out[c] = sum over r of x[r][c]) or trailing axes (ROWS: out[r] =
 * sum over c), each in one float32 accumulator from 0 in index order, as the wasm Sum does: column
 * sums run down the rows with every column its own accumulator (the compiler may vectorise across
 * columns, never along one), so the bits are the wasm kernel's. */
typedef struct {
  const float *x;
  float *out;
  int64_t rows, cols;
  int byColumns;
  int64_t perBlock; /* rows a block of row sums takes */
  int squares;      /* sum x * x (each product rounded to float32 first, as Square then Sum) */
  int64_t colsPerTask; /* columns a block of column sums takes */
} Sum;

/* Columns a task of column sums takes: a thread's share, but at least SUM_COLS. Each task streams
 * every row through its window, so a window of a few hundred floats is read at a fraction of the
 * memory's speed: on two threads, two windows of 704 columns ran a 4096 x 1408 sum in 1.6-2.4 ms,
 * six of 256 in 3.9 (4096 x 1408; one thread 3.0-5.6). The split never changes a sum (each column
 * is its own accumulator, rows in order). */
enum { SUM_COLS = 256 };
static int64_t sum_cols(int64_t cols, int64_t threads) {
  const int64_t share = ((cols + threads - 1) / threads + 15) / 16 * 16;
  return share > SUM_COLS ? share : SUM_COLS;
}

static void sum_block(void *ctx, int64_t t) {
  const Sum *s = ctx;
  if (s->byColumns) {
    const int64_t w = s->colsPerTask, c0 = t * w, c1 = c0 + w < s->cols ? c0 + w : s->cols;
    /* restrict: the sums and the matrix never overlap, so the adds vectorise across columns (each
     * column still its own accumulator, rows in order). */
    float *restrict o = s->out;
    for (int64_t c = c0; c < c1; c++) o[c] = 0.0f;
    for (int64_t r = 0; r < s->rows; r++) {
      const float *restrict x = s->x + r * s->cols;
      if (s->squares) for (int64_t c = c0; c < c1; c++) o[c] += x[c] * x[c]; /* no contraction: -ffp-contract=off */
      else for (int64_t c = c0; c < c1; c++) o[c] += x[c];
    }
  } else {
    const int64_t r0 = t * s->perBlock, r1 = r0 + s->perBlock < s->rows ? r0 + s->perBlock : s->rows;
    for (int64_t r = r0; r < r1; r++) {
      const float *x = s->x + r * s->cols;
      float acc = 0.0f;
      for (int64_t c = 0; c < s->cols; c++) acc += x[c];
      s->out[r] = acc;
    }
  }
}

/* Transposes: out = x with its axes permuted. Two forms: the last two axes swapped (a batch of
 * matrices, in 32 x 32 blocks so that reads and writes both stay in cache lines), or any
 * permutation that keeps the last axis (contiguous runs copied as they are). */
enum { T_TILE = 32, T_MAX_RANK = 6 };

typedef struct {
  const float *x;
  float *out;
  int64_t batch, rows, cols; /* swap form */
  int rank;                  /* run form: out's shape and, per out axis, x's stride */
  int64_t shape[T_MAX_RANK], stride[T_MAX_RANK], run, runs, perBlock; /* perBlock: runs a block copies */
  int swap;
} Transpose;

static void transpose_block(void *ctx, int64_t t) {
  const Transpose *p = ctx;
  if (p->swap) {
    const int64_t bandsPer = (p->rows + T_TILE - 1) / T_TILE, b = t / bandsPer, r0 = (t % bandsPer) * T_TILE;
    const int64_t r1 = r0 + T_TILE < p->rows ? r0 + T_TILE : p->rows;
    const float *x = p->x + b * p->rows * p->cols;
    float *o = p->out + b * p->rows * p->cols;
    for (int64_t c0 = 0; c0 < p->cols; c0 += T_TILE) {
      const int64_t c1 = c0 + T_TILE < p->cols ? c0 + T_TILE : p->cols;
      for (int64_t c = c0; c < c1; c++)
        for (int64_t r = r0; r < r1; r++) o[c * p->rows + r] = x[r * p->cols + c];
    }
    return;
  }
  /* Runs [t * per, ...) of out, each `run` contiguous floats read from x at the run's strided offset. */
  const int64_t i0 = t * p->perBlock, i1 = i0 + p->perBlock < p->runs ? i0 + p->perBlock : p->runs;
  for (int64_t i = i0; i < i1; i++) {
    int64_t rest = i, src = 0;
    for (int d = p->rank - 2; d >= 0; d--) {
      src += (rest % p->shape[d]) * p->stride[d];
      rest /= p->shape[d];
    }
    memcpy(p->out + i * p->run, p->x + src, (size_t)p->run * sizeof(float));
  }
}

/* ---- N-API ---- */

#define CHECK(call) do { if ((call) != napi_ok) { napi_throw_error(env, NULL, "elementwise-kernels: bad arguments"); return NULL; } } while (0)

/* The heap and `count` numeric arguments after it; NULL (with an exception pending) if malformed. */
static float *heap_args(napi_env env, napi_callback_info info, size_t count, int64_t *v, int64_t *elems) {
  napi_value argv[16];
  size_t argc = 16;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != count + 1) {
    napi_throw_error(env, NULL, "elementwise-kernels: wrong number of arguments");
    return NULL;
  }
  void *data = NULL;
  size_t bytes = 0;
  if (napi_get_arraybuffer_info(env, argv[0], &data, &bytes) != napi_ok) {
    napi_throw_error(env, NULL, "elementwise-kernels: the first argument must be the heap's ArrayBuffer");
    return NULL;
  }
  for (size_t i = 0; i < count; i++) {
    double d;
    if (napi_get_value_double(env, argv[i + 1], &d) != napi_ok || d != d || d < 0 || d > 9.0e15) {
      napi_throw_error(env, NULL, "elementwise-kernels: arguments must be non-negative numbers");
      return NULL;
    }
    v[i] = (int64_t)d;
  }
  *elems = (int64_t)(bytes / 4);
  return data;
}

/* A float argument passed as its float32 bit pattern (a heap argument is a non-negative integer): 0 if it is not one. */
static int float_of_bits(int64_t bits, float *f) {
  if (bits > 0xffffffffLL) return 0;
  const uint32_t b = (uint32_t)bits;
  memcpy(f, &b, sizeof *f);
  return 1;
}

static napi_value out_of_range(napi_env env) {
  napi_throw_range_error(env, NULL, "elementwise-kernels: operand outside the heap or bad sizes");
  return NULL;
}

/* binary(heap, op, mode, n, inner, aOff, bOff, outOff): out[0..n) = a op b, b laid over the
 * output by `mode` (SAME: n values, SCALAR: 1, TILE: `inner` values repeated, COLUMN: one per
 * `inner` consecutive outputs). */
static napi_value binary(napi_env env, napi_callback_info info) {
  int64_t v[7], elems;
  float *heap = heap_args(env, info, 7, v, &elems);
  if (!heap) return NULL;
  const int64_t op = v[0], mode = v[1], n = v[2], inner = v[3], aOff = v[4], bOff = v[5], oOff = v[6];
  const int64_t nb = mode == B_SAME ? n : mode == B_SCALAR ? 1 : mode == B_TILE ? inner : (inner > 0 ? n / inner : 0);
  if (op > OP_SILU_MUL || (op == OP_SILU_MUL && mode != B_SAME) || mode > B_COLUMN || ((mode == B_TILE || mode == B_COLUMN) && (inner < 1 || n % inner != 0)) ||
      aOff + n > elems || bOff + nb > elems || oOff + n > elems)
    return out_of_range(env);
  if (n == 0) return NULL;
  const Binary k = {heap + aOff, heap + bOff, heap + oOff, n, inner, (int)op, (int)mode};
  const int rowed = mode == B_TILE || mode == B_COLUMN;
  split_run(0, &k, rowed ? n / inner : n, rowed ? inner : 1, 1);
  return NULL;
}

/* unary(heap, op, n, xOff, outOff) */
static napi_value unary(napi_env env, napi_callback_info info) {
  int64_t v[4], elems;
  float *heap = heap_args(env, info, 4, v, &elems);
  if (!heap) return NULL;
  const int64_t op = v[0], n = v[1], xOff = v[2], oOff = v[3];
  if (op > U_EXP || xOff + n > elems || oOff + n > elems) return out_of_range(env);
  if (n == 0) return NULL;
  const Unary k = {heap + xOff, heap + oOff, n, (int)op};
  split_run(1, &k, n, 1, 1);
  return NULL;
}

/* rope(heap, rows, T, width, span, xOff, cosOff, sinOff, outOff): out `[rows, width]` = x * cos +
 * x[partner] * sin with cos and sin `[T, width]` (row r reads their row r mod T; rows a multiple of
 * T), partner swapping the halves of each block of 2 * span dims (width a multiple of 2 * span). The
 * three float32 operations TensorFlow.js's mul, mul, add make (sin carries the signs), so the same
 * bits as the composed ops with the swap as a reverse or a 0/1 product. */
static napi_value rope(napi_env env, napi_callback_info info) {
  int64_t v[8], elems;
  float *heap = heap_args(env, info, 8, v, &elems);
  if (!heap) return NULL;
  const int64_t n = v[0], T = v[1], width = v[2], span = v[3], xOff = v[4], cOff = v[5], sOff = v[6], oOff = v[7];
  if (T < 1 || span < 1 || width % (2 * span) != 0 || n % T != 0 || xOff + n * width > elems || cOff + T * width > elems ||
      sOff + T * width > elems || oOff + n * width > elems)
    return out_of_range(env);
  if (n == 0 || width == 0) return NULL;
  const Rope k = {heap + xOff, heap + cOff, heap + sOff, heap + oOff, T, width, span};
  split_run(3, &k, n, width, 1);
  return NULL;
}

/* The attention's working memory, kept per thread between calls and grown when a call needs more:
 * a fresh block of this size (tens of MB) comes from mmap, and touching its new pages cost more
 * than the rest of the kernel's layout work (10-12 of 70 ms, 4096 tokens, 8 heads). Freed when the
 * thread exits (a worker of the forward pool). */
static pthread_key_t scratchKey;
static pthread_once_t scratchOnce = PTHREAD_ONCE_INIT;
typedef struct { float *data; size_t len; } Scratch;
static void scratch_free(void *p) { Scratch *s = p; free(s->data); free(s); }
static void scratch_key(void) { pthread_key_create(&scratchKey, scratch_free); }
static float *attention_scratch(size_t floats) {
  pthread_once(&scratchOnce, scratch_key);
  Scratch *s = pthread_getspecific(scratchKey);
  if (!s) {
    if (!(s = calloc(1, sizeof(Scratch)))) return NULL;
    pthread_setspecific(scratchKey, s);
  }
  if (floats > s->len) {
    free(s->data);
    s->data = malloc(floats * sizeof(float));
    s->len = s->data ? floats : 0;
  }
  return s->data;
}

/* The attention's layouts (exact copies, and q times the scale), one task per (batch, kv head) group. */
typedef struct {
  float *heap, *buf;
  int64_t qOff, kOff, vOff, oOff, Tq, Tk, KV, g, hd, qgOff, kgOff, vgOff, cOff;
  float scale;
} Layout;

static void layout_in(void *ctx, int64_t grp) {
  const Layout *l = ctx;
  const int64_t b = grp / l->KV, kv = grp % l->KV, hd = l->hd;
  for (int64_t gi = 0; gi < l->g; gi++)
    for (int64_t t = 0; t < l->Tq; t++) {
      const float *src = l->heap + l->qOff + (((b * l->Tq + t) * l->KV + kv) * l->g + gi) * hd;
      float *dst = l->buf + l->qgOff + ((grp * l->g + gi) * l->Tq + t) * hd;
      for (int64_t d = 0; d < hd; d++) dst[d] = src[d] * l->scale;
    }
  for (int64_t t = 0; t < l->Tk; t++) {
    const int64_t from = ((b * l->Tk + t) * l->KV + kv) * hd, to = (grp * l->Tk + t) * hd;
    memcpy(l->buf + l->kgOff + to, l->heap + l->kOff + from, (size_t)hd * sizeof(float));
    memcpy(l->buf + l->vgOff + to, l->heap + l->vOff + from, (size_t)hd * sizeof(float));
  }
}

static void layout_out(void *ctx, int64_t grp) {
  const Layout *l = ctx;
  const int64_t b = grp / l->KV, kv = grp % l->KV, hd = l->hd;
  for (int64_t gi = 0; gi < l->g; gi++)
    for (int64_t t = 0; t < l->Tq; t++)
      memcpy(l->heap + l->oOff + (((b * l->Tq + t) * l->KV + kv) * l->g + gi) * hd,
        l->buf + l->cOff + ((grp * l->g + gi) * l->Tq + t) * hd, (size_t)hd * sizeof(float));
}

/* A layout's groups on the pool, or here when the copy is too small to share. */
static void layout_run(void (*fn)(void *, int64_t), const Layout *l, int64_t groups, int64_t elems) {
  if (elems < POOL_MIN_WORK) for (int64_t i = 0; i < groups; i++) fn((void *)l, i);
  else prunelab_pool_run(fn, (void *)l, groups);
}

/* attention(heap, B, Tq, Tk, H, KV, hd, step, qOff, kOff, vOff, maskOff, hasMask, outOff, scaleBits):
 * causal grouped attention of src/model/ops.ts `groupedAttention`, step for step: q [B*Tq, H*hd]
 * times the scale (its float32 bit pattern) laid out as n = B*KV groups of [g*Tq, hd] (g = H/KV),
 * k and v as groups of [Tk, hd]; per run of `step` groups the scores q.k^T (one batched product,
 * transposed keys), plus the mask [g*Tq, Tk] if hasMask, their softmax, times v; the contexts laid
 * back as [B*Tq, H*hd]. The layouts are exact copies and the rest the kernels those ops call, so
 * the same bits. */
static napi_value attention(napi_env env, napi_callback_info info) {
  int64_t v[14], elems;
  float *heap = heap_args(env, info, 14, v, &elems);
  if (!heap) return NULL;
  const int64_t B = v[0], Tq = v[1], Tk = v[2], H = v[3], KV = v[4], hd = v[5], step = v[6];
  const int64_t qOff = v[7], kOff = v[8], vOff = v[9], mOff = v[10], hasMask = v[11], oOff = v[12];
  float scale;
  if (B < 1 || Tq < 1 || Tk < 1 || KV < 1 || H % KV != 0 || hd < 1 || step < 1 || !float_of_bits(v[13], &scale) ||
      qOff + B * Tq * H * hd > elems || kOff + B * Tk * KV * hd > elems || vOff + B * Tk * KV * hd > elems ||
      (hasMask && mOff + (H / KV) * Tq * Tk > elems) || oOff + B * Tq * H * hd > elems)
    return out_of_range(env);
  const int64_t g = H / KV, n = B * KV, rq = g * Tq, run = step < n ? step : n;
  /* One block: q, k, v and the contexts by group, and a run's scores and their softmax. */
  const int64_t qgOff = 0, kgOff = qgOff + n * rq * hd, vgOff = kgOff + n * Tk * hd, cOff = vgOff + n * Tk * hd;
  const int64_t s1Off = cOff + n * rq * hd, s2Off = s1Off + run * rq * Tk, total = s2Off + run * rq * Tk;
  float *buf = attention_scratch((size_t)total);
  if (!buf) { napi_throw_error(env, NULL, "elementwise-kernels: out of memory"); return NULL; }
  /* q[b, t, kv, gi, :] * scale -> qg[b, kv, gi, t, :]; k, v [b, t, kv, :] -> [b, kv, t, :]; one task a group. */
  const Layout lay = {heap, buf, qOff, kOff, vOff, oOff, Tq, Tk, KV, g, hd, qgOff, kgOff, vgOff, cOff, scale};
  layout_run(layout_in, &lay, n, B * (Tq * H + 2 * Tk * KV) * hd);
  for (int64_t start = 0; start < n; start += step) {
    const int64_t cnt = start + step < n ? step : n - start;
    prunelab_gemm(buf, cnt, rq, Tk, hd, qgOff + start * rq * hd, rq * hd, 0, kgOff + start * Tk * hd, Tk * hd, 1, s1Off);
    /* The scores plus the mask (the Add kernel's float32 sum, taken in the softmax's pass), their softmax into s2. */
    const Rows sm = {buf + s1Off, buf + s2Off, cnt * rq, Tk, R_SOFTMAX, NULL, 0.0f, hasMask ? heap + mOff : NULL, rq};
    /* On the pool only when the scores product was: one run in the calling thread leaves its scores in
     * that core's cache (stories260K's 1,024 x 128 scores, a 1M multiply-add product, on the pool: the
     * prefill measured above fell to 21.2k tokens/s). */
    split_run(2, &sm, cnt * rq, Tk, prunelab_gemm_pools(cnt, rq, Tk, hd));
    prunelab_gemm(buf, cnt, rq, hd, Tk, s2Off, rq * Tk, 0, vgOff + start * Tk * hd, Tk * hd, 0, cOff + start * rq * hd);
  }
  /* ctx[b, kv, gi, t, :] -> out[b, t, kv, gi, :], one task a group. */
  layout_run(layout_out, &lay, n, B * Tq * H * hd);
  return NULL;
}

/* rows(heap, op, rows, cols, xOff, outOff): per row of `cols`, its mean (one value) or softmax. */
static napi_value rows(napi_env env, napi_callback_info info) {
  int64_t v[5], elems;
  float *heap = heap_args(env, info, 5, v, &elems);
  if (!heap) return NULL;
  const int64_t op = v[0], nr = v[1], nc = v[2], xOff = v[3], oOff = v[4];
  if (op > R_SOFTMAX || nc < 1 || xOff + nr * nc > elems || oOff + (op == R_MEAN ? nr : nr * nc) > elems) return out_of_range(env);
  if (nr == 0) return NULL;
  const Rows k = {heap + xOff, heap + oOff, nr, nc, (int)op, NULL, 0.0f};
  split_run(2, &k, nr, nc, 1);
  return NULL;
}

/* rmsNorm(heap, rows, cols, xOff, wOff, outOff, epsBits): per row of `cols`, x * rsqrt(mean(x^2) +
 * eps) * w, eps given as its float32 bit pattern: Square, Mean, Add, Rsqrt, Multiply, Multiply as
 * those kernels make them (the mean's 16 partial sums in their order), so the same bits. */
static napi_value rmsNorm(napi_env env, napi_callback_info info) {
  int64_t v[6], elems;
  float *heap = heap_args(env, info, 6, v, &elems);
  if (!heap) return NULL;
  const int64_t nr = v[0], nc = v[1], xOff = v[2], wOff = v[3], oOff = v[4];
  float eps;
  if (nc < 1 || !float_of_bits(v[5], &eps) || xOff + nr * nc > elems || wOff + nc > elems || oOff + nr * nc > elems) return out_of_range(env);
  if (nr == 0) return NULL;
  const Rows k = {heap + xOff, heap + oOff, nr, nc, R_RMSNORM, heap + wOff, eps};
  split_run(2, &k, nr, nc, 1);
  return NULL;
}

/* sum(heap, rows, cols, byColumns, xOff, outOff): the [rows, cols] matrix's column sums (cols
 * values) or row sums (rows values), in the wasm Sum's order. sumSquares(heap, rows, cols, xOff,
 * outOff): the column sums of x * x, each product rounded to float32 before its add: the values
 * of Square then Sum over the rows, without the squares' matrix. */
static napi_value sum_of(napi_env env, napi_callback_info info, int squares) {
  int64_t v[5], elems;
  float *heap = heap_args(env, info, squares ? 4 : 5, v, &elems);
  if (!heap) return NULL;
  if (squares) { v[4] = v[3]; v[3] = v[2]; v[2] = 1; }
  const int64_t nr = v[0], nc = v[1], byColumns = v[2], xOff = v[3], oOff = v[4];
  if (byColumns > 1 || xOff + nr * nc > elems || oOff + (byColumns ? nc : nr) > elems) return out_of_range(env);
  if ((byColumns ? nc : nr) == 0) return NULL;
  const Sum k = {heap + xOff, heap + oOff, nr, nc, (int)byColumns, nc > 0 && BLOCK / nc > 0 ? BLOCK / nc : 1, squares,
    sum_cols(nc, prunelab_pool_threads())};
  const int64_t tasks = byColumns ? (nc + k.colsPerTask - 1) / k.colsPerTask : (nr + k.perBlock - 1) / k.perBlock;
  if (nr * nc < POOL_MIN_WORK) for (int64_t t = 0; t < tasks; t++) sum_block((void *)&k, t);
  else prunelab_pool_run(sum_block, (void *)&k, tasks);
  return NULL;
}

static napi_value sum(napi_env env, napi_callback_info info) { return sum_of(env, info, 0); }
static napi_value sumSquares(napi_env env, napi_callback_info info) { return sum_of(env, info, 1); }

/* transpose(heap, xOff, outOff, rank, perm..., shape...): out = x with axes permuted by perm
 * (out axis i is x's axis perm[i]); x's shape given. Only the two forms of Transpose above; the
 * caller checks which applies. */
static napi_value transpose(napi_env env, napi_callback_info info) {
  napi_value argv[4 + 2 * T_MAX_RANK];
  size_t argc = 4 + 2 * T_MAX_RANK;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  void *data = NULL;
  size_t bytes = 0;
  int64_t a[3 + 2 * T_MAX_RANK];
  if (argc < 4 || napi_get_arraybuffer_info(env, argv[0], &data, &bytes) != napi_ok) return out_of_range(env);
  for (size_t i = 1; i < argc; i++) {
    double d;
    if (napi_get_value_double(env, argv[i], &d) != napi_ok || d != d || d < 0 || d > 9.0e15) return out_of_range(env);
    a[i - 1] = (int64_t)d;
  }
  const int64_t xOff = a[0], oOff = a[1], rank = a[2];
  if (rank < 2 || rank > T_MAX_RANK || argc != (size_t)(4 + 2 * rank)) return out_of_range(env);
  const int64_t *perm = a + 3, *shape = a + 3 + rank;
  int64_t n = 1, seen = 0;
  for (int64_t i = 0; i < rank; i++) {
    if (perm[i] >= rank || (seen >> perm[i]) & 1) return out_of_range(env);
    seen |= (int64_t)1 << perm[i];
    n *= shape[i];
  }
  const int64_t elems = (int64_t)(bytes / 4);
  if (xOff + n > elems || oOff + n > elems) return out_of_range(env);
  if (n == 0) return NULL;
  float *heap = data;
  Transpose k;
  memset(&k, 0, sizeof k);
  k.x = heap + xOff;
  k.out = heap + oOff;
  int64_t tasks;
  int swap = perm[rank - 1] == rank - 2 && perm[rank - 2] == rank - 1;
  for (int64_t i = 0; i < rank - 2 && swap; i++) swap = perm[i] == i;
  if (swap) {
    k.swap = 1;
    k.rows = shape[rank - 2];
    k.cols = shape[rank - 1];
    k.batch = n / (k.rows * k.cols);
    tasks = k.batch * ((k.rows + T_TILE - 1) / T_TILE);
  } else if (perm[rank - 1] == rank - 1) {
    int64_t xStride[T_MAX_RANK];
    xStride[rank - 1] = 1;
    for (int64_t d = rank - 2; d >= 0; d--) xStride[d] = xStride[d + 1] * shape[d + 1];
    k.rank = (int)rank;
    for (int64_t i = 0; i < rank; i++) { k.shape[i] = shape[perm[i]]; k.stride[i] = xStride[perm[i]]; }
    k.run = shape[rank - 1];
    k.runs = n / k.run;
    k.perBlock = BLOCK / k.run > 0 ? BLOCK / k.run : 1;
    tasks = (k.runs + k.perBlock - 1) / k.perBlock;
  } else {
    return out_of_range(env);
  }
  if (n < POOL_MIN_WORK) for (int64_t t = 0; t < tasks; t++) transpose_block(&k, t);
  else prunelab_pool_run(transpose_block, &k, tasks);
  return NULL;
}

/* simd() -> the vector width in use, for results; simd(name) first switches to that width where
 * the CPU has it (tests: every width must give the same bits), or back to the best with "". */
static napi_value simd(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc == 1) {
    char name[16] = {0};
    size_t len = 0;
    CHECK(napi_get_value_string_utf8(env, argv[0], name, sizeof name, &len));
    width = NULL;
    const Width *best = pick_width();
    for (size_t i = 0; i < sizeof WIDTHS / sizeof WIDTHS[0]; i++)
      if (strcmp(WIDTHS[i].name, name) == 0 && &WIDTHS[i] >= best) width = &WIDTHS[i]; /* later entries are narrower */
  }
  napi_value s;
  CHECK(napi_create_string_utf8(env, pick_width()->name, NAPI_AUTO_LENGTH, &s));
  return s;
}

/* Called by the addon's init (native/openblas-kernels.c). */
napi_status elementwise_register(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
    {"ewBinary", NULL, binary, NULL, NULL, NULL, napi_default, NULL},
    {"ewUnary", NULL, unary, NULL, NULL, NULL, napi_default, NULL},
    {"ewRows", NULL, rows, NULL, NULL, NULL, napi_default, NULL},
    {"ewSimd", NULL, simd, NULL, NULL, NULL, napi_default, NULL},
    {"ewSum", NULL, sum, NULL, NULL, NULL, napi_default, NULL},
    {"ewSumSquares", NULL, sumSquares, NULL, NULL, NULL, napi_default, NULL},
    {"ewTranspose", NULL, transpose, NULL, NULL, NULL, napi_default, NULL},
    {"ewRope", NULL, rope, NULL, NULL, NULL, napi_default, NULL},
    {"ewRmsNorm", NULL, rmsNorm, NULL, NULL, NULL, napi_default, NULL},
    {"ewAttention", NULL, attention, NULL, NULL, NULL, napi_default, NULL},
  };
  return napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
}
