/*
 * OpenBLAS GEMM for the WebAssembly backend's matrix products.
 *
 * Hand-written because no maintained npm package binds a system BLAS for Node 20: this file is
 * the N-API glue and a small thread pool; the arithmetic is OpenBLAS's (Debian `libopenblas-dev`).
 * Operands are read and the product written in place inside an ArrayBuffer (the WebAssembly
 * heap), by element offset, so a product costs no copies.
 *
 * Why a pool of our own instead of OpenBLAS's threads: OpenBLAS splits a product by thread count,
 * and its edge kernels sum in another order, so its results change with the number of threads
 * (measured: 41,205 of 786,432 entries of a 512x576x1536 product differ between 1 and 2). Here a
 * product is cut into tiles fixed by its shape alone (TILE x TILE blocks of C, one batch entry at a
 * time); each tile is one single-threaded OpenBLAS call, whichever thread runs it, so results are
 * the same for any thread count and in any worker.
 */
#include <node_api.h>
#include <cblas.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

extern void openblas_set_num_threads(int);
extern char *openblas_get_config(void);

enum { TILE = 256, MAX_THREADS = 64 };
/* Below this many multiply-adds a product runs in the calling thread: waking the pool costs more. */
static const int64_t POOL_MIN_MACS = 1 << 21;

typedef struct {
  float *base;
  int64_t m, n, k, aOff, aStride, bOff, bStride, cOff;
  int transA, transB;
  int64_t tilesM, tilesN, tiles;
} Product;

static void run_tile(const Product *p, int64_t t) {
  const int64_t perBatch = p->tilesM * p->tilesN, b = t / perBatch, r = t % perBatch;
  const int64_t i0 = (r / p->tilesN) * TILE, j0 = (r % p->tilesN) * TILE;
  const int64_t mi = p->m - i0 < TILE ? p->m - i0 : TILE, nj = p->n - j0 < TILE ? p->n - j0 : TILE;
  const float *A = p->base + p->aOff + p->aStride * b, *B = p->base + p->bOff + p->bStride * b;
  float *C = p->base + p->cOff + p->m * p->n * b + i0 * p->n + j0;
  const int lda = p->transA ? (int)p->m : (int)p->k, ldb = p->transB ? (int)p->k : (int)p->n;
  /* Row i0 of op(A): A[i0][0] plain, A[0][i0] transposed; column j0 of op(B) likewise. */
  const float *Ai = p->transA ? A + i0 : A + i0 * p->k;
  const float *Bj = p->transB ? B + j0 * p->k : B + j0;
  if (p->k == 0) {
    for (int64_t i = 0; i < mi; i++) for (int64_t j = 0; j < nj; j++) C[i * p->n + j] = 0.0f;
    return;
  }
  cblas_sgemm(CblasRowMajor, p->transA ? CblasTrans : CblasNoTrans, p->transB ? CblasTrans : CblasNoTrans,
              (int)mi, (int)nj, (int)p->k, 1.0f, Ai, lda, Bj, ldb, 0.0f, C, (int)p->n);
}

/* The pool: `threads - 1` helpers plus the caller take tiles from one counter. One product at a
 * time: a caller that finds the pool busy (another Node worker thread) runs its tiles itself. */
static pthread_mutex_t poolBusy = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wake = PTHREAD_COND_INITIALIZER, done = PTHREAD_COND_INITIALIZER;
static int threads = 1, started = 0, working = 0, participants = 0;
static uint64_t generation = 0;
static const Product *current = NULL;
static atomic_llong nextTile;

static void take_tiles(const Product *p) {
  for (int64_t t; (t = atomic_fetch_add(&nextTile, 1)) < p->tiles;) run_tile(p, t);
}

static void *helper(void *arg) {
  const int index = (int)(intptr_t)arg;
  uint64_t seen = 0;
  pthread_mutex_lock(&lock);
  for (;;) {
    while (generation == seen) pthread_cond_wait(&wake, &lock);
    seen = generation;
    if (index >= participants) continue; /* a product this helper sits out */
    const Product *p = current;
    pthread_mutex_unlock(&lock);
    take_tiles(p);
    pthread_mutex_lock(&lock);
    if (--working == 0) pthread_cond_signal(&done);
  }
  return NULL;
}

/* Start helpers up to `threads - 1` (with `lock` held). A new helper's index is at least the
 * participant count of any product in flight, so it sits that product out. */
static void start_helpers(void) {
  while (started < threads - 1) {
    pthread_t id;
    if (pthread_create(&id, NULL, helper, (void *)(intptr_t)started) != 0) break;
    pthread_detach(id);
    started++;
  }
}

static void run_product(const Product *p) {
  if (threads <= 1 || p->tiles == 1 || p->m * p->n * p->k * (p->tiles / (p->tilesM * p->tilesN)) < POOL_MIN_MACS ||
      pthread_mutex_trylock(&poolBusy) != 0) {
    for (int64_t t = 0; t < p->tiles; t++) run_tile(p, t);
    return;
  }
  pthread_mutex_lock(&lock);
  start_helpers();
  /* Every helper counted here takes part once, so `current` stays valid until `working` is 0. */
  participants = started < threads - 1 ? started : threads - 1;
  working = participants;
  current = p;
  atomic_store(&nextTile, 0);
  generation++;
  pthread_cond_broadcast(&wake);
  pthread_mutex_unlock(&lock);
  take_tiles(p);
  pthread_mutex_lock(&lock);
  while (working > 0) pthread_cond_wait(&done, &lock);
  current = NULL;
  pthread_mutex_unlock(&lock);
  pthread_mutex_unlock(&poolBusy);
}

#define CHECK(call) do { if ((call) != napi_ok) { napi_throw_error(env, NULL, "openblas-kernels: bad arguments"); return NULL; } } while (0)

static double num(napi_env env, napi_value v, int *ok) {
  double d = 0;
  if (napi_get_value_double(env, v, &d) != napi_ok) *ok = 0;
  return d;
}

/* gemm(heap, batch, m, n, k, aOff, aStride, transA, bOff, bStride, transB, cOff):
 * for each batch index i, C_i[m x n] = op(A_i) . op(B_i), row-major float32; offsets and strides
 * in elements (a stride of 0 broadcasts one operand over the batch). */
static napi_value gemm(napi_env env, napi_callback_info info) {
  size_t argc = 12;
  napi_value argv[12];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc != 12) { napi_throw_error(env, NULL, "openblas-kernels: gemm takes 12 arguments"); return NULL; }
  void *data = NULL;
  size_t bytes = 0;
  CHECK(napi_get_arraybuffer_info(env, argv[0], &data, &bytes));
  int ok = 1;
  Product p;
  const int64_t batch = (int64_t)num(env, argv[1], &ok);
  p.m = (int64_t)num(env, argv[2], &ok); p.n = (int64_t)num(env, argv[3], &ok); p.k = (int64_t)num(env, argv[4], &ok);
  p.aOff = (int64_t)num(env, argv[5], &ok); p.aStride = (int64_t)num(env, argv[6], &ok);
  p.transA = num(env, argv[7], &ok) != 0;
  p.bOff = (int64_t)num(env, argv[8], &ok); p.bStride = (int64_t)num(env, argv[9], &ok);
  p.transB = num(env, argv[10], &ok) != 0;
  p.cOff = (int64_t)num(env, argv[11], &ok);
  if (!ok) { napi_throw_error(env, NULL, "openblas-kernels: gemm arguments must be numbers"); return NULL; }
  const int64_t elems = (int64_t)(bytes / 4);
  if (batch < 1 || p.m < 0 || p.n < 0 || p.k < 0 || p.aOff < 0 || p.bOff < 0 || p.cOff < 0 || p.aStride < 0 || p.bStride < 0 ||
      p.aOff + p.aStride * (batch - 1) + p.m * p.k > elems || p.bOff + p.bStride * (batch - 1) + p.k * p.n > elems ||
      p.cOff + p.m * p.n * batch > elems) {
    napi_throw_range_error(env, NULL, "openblas-kernels: gemm operand outside the buffer");
    return NULL;
  }
  if (p.m == 0 || p.n == 0) return NULL;
  p.base = (float *)data;
  p.tilesM = (p.m + TILE - 1) / TILE;
  p.tilesN = (p.n + TILE - 1) / TILE;
  p.tiles = p.tilesM * p.tilesN * batch;
  run_product(&p);
  return NULL;
}

static napi_value setThreads(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int ok = 1;
  const int n = (int)num(env, argv[0], &ok);
  if (!ok || n < 1) { napi_throw_error(env, NULL, "openblas-kernels: setThreads takes a positive count"); return NULL; }
  pthread_mutex_lock(&lock);
  threads = n > MAX_THREADS ? MAX_THREADS : n;
  /* Now rather than at the first product: helpers live as long as the process, and one started by
   * a worker thread's product would outlast that worker (as a thread the process gained). */
  start_helpers();
  pthread_mutex_unlock(&lock);
  return NULL;
}

static napi_value describe(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value obj, cfg, count;
  CHECK(napi_create_object(env, &obj));
  CHECK(napi_create_string_utf8(env, openblas_get_config(), NAPI_AUTO_LENGTH, &cfg));
  CHECK(napi_create_int32(env, threads, &count));
  CHECK(napi_set_named_property(env, obj, "config", cfg));
  CHECK(napi_set_named_property(env, obj, "threads", count));
  return obj;
}

static napi_value init(napi_env env, napi_value exports) {
  openblas_set_num_threads(1); /* every OpenBLAS call is one tile on one thread (see the header) */
  napi_property_descriptor props[] = {
    {"gemm", NULL, gemm, NULL, NULL, NULL, napi_default, NULL},
    {"setThreads", NULL, setThreads, NULL, NULL, NULL, napi_default, NULL},
    {"describe", NULL, describe, NULL, NULL, NULL, napi_default, NULL},
  };
  if (napi_define_properties(env, exports, 3, props) != napi_ok) return NULL;
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
