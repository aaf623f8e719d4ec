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
 * product is cut into tiles fixed by its shape alone (`choose_tiles`: blocks of C, one batch entry
 * at a time); each tile is one single-threaded OpenBLAS call, whichever thread runs it, so results
 * are the same for any thread count and in any worker.
 *
 * Tile sides. A tile re-packs its slice of both operands, so small tiles cost: per CPU-second on
 * one core (Xeon, OpenBLAS 0.3.21 SkylakeX, 512x1536x576) 256x256 tiles ran at ~0.8 of one whole
 * call, 256-row tiles ~0.9, 512 x >= 1024 tiles ~1.0; and 2048^3 on 2 threads 164 GFLOP/s in 256x256
 * tiles vs 201 in 512x1024. So tiles are as large as 512 rows x 2048 columns, and a product big
 * enough for the pool is cut further (columns down to 256, rows down to 128, whichever is further
 * above its floor) until it has `minTiles` tiles: MIN_TILES, so two to four threads share it evenly,
 * or one per core where the process may run on more (`tile_cores`: a constant of the machine, not
 * the thread count, so values still do not depend on the threads; without it a 16-core machine's
 * products ran on 4: a 256x2048x5632 product made the same GFLOP/s on 4, 8 and 16 threads on the
 * H200 machine's Xeon). Sides are multiples of 64, which
 * keeps OpenBLAS's interior kernels on every tile (tiles of 100 or 48 rows changed results).
 *
 * Wide tiles (`wide_tiles`): where every tile of that shape-fixed cut is large enough for
 * OpenBLAS's blocked driver (BLOCKED_MIN_MACS), the product is cut instead into one tile per thread
 * (one call on one thread), each also that large, with sides multiples of 64. Every entry is then
 * summed by the same driver, the same K blocking (set by k alone) and the same micro-kernel class
 * as in the shape-fixed cut, so the values are those of that cut for any thread count
 * (test/openblas.test.ts compares them bit for bit, 1 to 4 threads, every transpose), while a tile
 * re-packs less: one thread, 512x1408 . 1408^2 as one call 82.7-83.6 GFLOP/s against 69.1-71.4 in
 * its 2 x 2 fixed tiles (bench/native/tiles-vs-whole.c). Only on the OpenBLAS cores where that was
 * measured (SkylakeX and its successors: WIDE_TILE_CORES); elsewhere the shape-fixed cut.
 */
#define _GNU_SOURCE /* sched_getaffinity, CPU_COUNT */
#include <node_api.h>
#include <cblas.h>
#include <sched.h>
#include <stdlib.h>
#include <unistd.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include "napi-args.h"
#include "gemm.h"

extern void openblas_set_num_threads(int);
extern char *openblas_get_config(void);

enum { MAX_TILE_ROWS = 512, MAX_TILE_COLS = 2048, MIN_TILE_ROWS = 128, MIN_TILE_COLS = 256, MIN_TILES = 4, MAX_THREADS = 64 };
/* The fewest tiles a pool-sized product is cut into (header); set once in init from tile_cores. */
static int minTiles = MIN_TILES;

/* The cores this process may run on (its affinity, as Node's os.availableParallelism), or the count
 * PRUNELAB_TILE_CORES names: a machine's products are cut as on that machine, to reproduce its
 * values elsewhere (src/backend/openblas.ts checks the variable before the addon loads). */
static int tile_cores(void) {
  const char *env = getenv("PRUNELAB_TILE_CORES");
  if (env && *env) {
    char *end = NULL;
    const long v = strtol(env, &end, 10);
    if (end && *end == 0 && v >= 1) return v > MAX_THREADS ? MAX_THREADS : (int)v;
  }
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0) return CPU_COUNT(&set);
  const long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? (int)n : 1;
}

/* Below this many multiply-adds a product runs in the calling thread: waking the pool costs more. */
static const int64_t POOL_MIN_MACS = 1 << 21;

typedef struct {
  float *base;
  int64_t m, n, k, aOff, aStride, bOff, bStride, cOff;
  int transA, transB;
  int64_t tileM, tileN, tilesM, tilesN, tiles;
} Product;

/* transB 2: B is symmetric (k = n) and the product is C = A·B, computed as A·Bᵀ (the same matrix)
 * in each tile of at least SYMMETRIC_MIN_MACS multiply-adds. OpenBLAS packs a transposed right
 * operand of a row-major product with a cheaper copy (perf, one thread, 512×1408 · 1408² in 2 × 2
 * tiles: B's packing 20 % of the product's time plain, 13.5 % transposed) into the same packed
 * values for the same kernel, so the entries are those of the plain product. Smaller tiles stay
 * plain: OpenBLAS sends small products to other kernels whose sums can differ by transposition (on
 * SkylakeX and its successors a plain row-major "direct" sgemm below 28·512² multiply-adds, and
 * small-matrix kernels below 100³); the bound is twice the larger. FISTAPruner's products with G. */
enum { BLOCKED_MIN_MACS = 2 * 28 * 512 * 512, SYMMETRIC_MIN_MACS = BLOCKED_MIN_MACS };

/* Wide tiles on (1) or off (0): set in init from OpenBLAS's core (WIDE_TILE_CORES), and by setWideTiles
 * for tests and benchmarks. */
static int wideTiles = 0;
static const char *const WIDE_TILE_CORES[] = {" SkylakeX ", " Cooperlake ", " SapphireRapids "};

static void run_tile(const Product *p, int64_t t) {
  const int64_t perBatch = p->tilesM * p->tilesN, b = t / perBatch, r = t % perBatch;
  const int64_t i0 = (r / p->tilesN) * p->tileM, j0 = (r % p->tilesN) * p->tileN;
  const int64_t mi = p->m - i0 < p->tileM ? p->m - i0 : p->tileM, nj = p->n - j0 < p->tileN ? p->n - j0 : p->tileN;
  const float *A = p->base + p->aOff + p->aStride * b, *B = p->base + p->bOff + p->bStride * b;
  float *C = p->base + p->cOff + p->m * p->n * b + i0 * p->n + j0;
  /* A symmetric B (transB 2) is read as Bᵀ where the tile is large enough (see SYMMETRIC_MIN_MACS). */
  const int transB = p->transB == 2 ? mi * nj * p->k >= SYMMETRIC_MIN_MACS : p->transB;
  const int lda = p->transA ? (int)p->m : (int)p->k, ldb = transB ? (int)p->k : (int)p->n;
  /* Row i0 of op(A): A[i0][0] plain, A[0][i0] transposed; column j0 of op(B) likewise. */
  const float *Ai = p->transA ? A + i0 : A + i0 * p->k;
  const float *Bj = transB ? B + j0 * p->k : B + j0;
  if (p->k == 0) {
    for (int64_t i = 0; i < mi; i++) for (int64_t j = 0; j < nj; j++) C[i * p->n + j] = 0.0f;
    return;
  }
  cblas_sgemm(CblasRowMajor, p->transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
              (int)mi, (int)nj, (int)p->k, 1.0f, Ai, lda, Bj, ldb, 0.0f, C, (int)p->n);
}

/* The pool: `threads - 1` helpers plus the caller take tasks (a product's tiles, or another
 * kernel's blocks: prunelab_pool_run) from one counter. One job at a time: a caller that finds the
 * pool busy (another Node worker thread) runs its tasks itself. The caller waits for the tasks to
 * be done and for the helpers that joined the job to leave it, not for every helper to wake: a
 * helper asleep when a small job comes (on a virtual machine a sleeping vCPU can take a
 * millisecond to wake) leaves the caller to do the job alone, and finds it over when it wakes
 * (stories260K's 128-token prefill, 2 threads: 16.5k tokens/s when the caller waited, against
 * 26.0k on one thread). */
typedef struct {
  void (*fn)(void *, int64_t);
  void *ctx;
  int64_t tasks;
} Job;

static pthread_mutex_t poolBusy = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wake = PTHREAD_COND_INITIALIZER, done = PTHREAD_COND_INITIALIZER;
static int threads = 1, started = 0, participants = 0;
/* Written under `lock`; atomic so that a spinning thread can watch them without it. */
static atomic_uint_fast64_t generation;
/* Helpers inside the current job (under `lock`): `current` stays valid until it is 0. */
static int joined = 0;
static const Job *current = NULL;
static atomic_llong nextTile, doneTasks;

/* How long a thread spins (watching `generation` or `doneTasks`) before it sleeps on its condition
 * variable: jobs come back to back in a solver's loop (a product, then a step over the same rows),
 * and on a virtual machine an idle vCPU can take a millisecond to wake, longer than a job. */
static const int64_t SPIN_NS = 200000;

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Spin (without `lock`) until *v differs from `value` or SPIN_NS passed. */
static void spin_while_u64(atomic_uint_fast64_t *v, uint64_t value) {
  const int64_t until = now_ns() + SPIN_NS;
  for (int i = 0; atomic_load_explicit(v, memory_order_acquire) == value; i++) {
    __builtin_ia32_pause();
    if ((i & 63) == 63 && now_ns() > until) return;
  }
}

/* Spin (without `lock`) until `tasks` tasks are done or SPIN_NS passed. */
static void spin_while_tasks(int64_t tasks) {
  const int64_t until = now_ns() + SPIN_NS;
  for (int i = 0; atomic_load_explicit(&doneTasks, memory_order_acquire) < tasks; i++) {
    __builtin_ia32_pause();
    if ((i & 63) == 63 && now_ns() > until) return;
  }
}

static void take_tasks(const Job *j) {
  for (int64_t t; (t = atomic_fetch_add(&nextTile, 1)) < j->tasks;) {
    j->fn(j->ctx, t);
    atomic_fetch_add_explicit(&doneTasks, 1, memory_order_release);
  }
}

static void *helper(void *arg) {
  const int index = (int)(intptr_t)arg;
  uint64_t seen = 0;
  pthread_mutex_lock(&lock);
  for (;;) {
    if (atomic_load(&generation) == seen) {
      pthread_mutex_unlock(&lock);
      spin_while_u64(&generation, seen);
      pthread_mutex_lock(&lock);
      while (atomic_load(&generation) == seen) pthread_cond_wait(&wake, &lock);
    }
    seen = atomic_load(&generation);
    /* A job this helper sits out, or one already over (its caller did the tasks while it slept). */
    if (index >= participants || !current) continue;
    const Job *j = current;
    joined++;
    pthread_mutex_unlock(&lock);
    take_tasks(j);
    pthread_mutex_lock(&lock);
    joined--;
    pthread_cond_signal(&done);
  }
  return NULL;
}

/* Start helpers up to `threads - 1` (with `lock` held). They are started when the count is set,
 * not at the first product, and kept like any BLAS library's threads, so a process's thread count
 * settles when its backend starts. A new helper's index is at least the participant count of any
 * job in flight, so it sits that job out. */
static void start_helpers(void) {
  while (started < threads - 1) {
    pthread_t id;
    if (pthread_create(&id, NULL, helper, (void *)(intptr_t)started) != 0) break;
    pthread_detach(id);
    started++;
  }
}

int prunelab_pool_threads(void) {
  pthread_mutex_lock(&lock);
  const int n = threads;
  pthread_mutex_unlock(&lock);
  return n;
}

/* Run fn(ctx, t) for every t < tasks, on the pool when it has helpers and is free, else here.
 * Which thread runs a task must not change its result (the callers' tasks are fixed by shape). */
void prunelab_pool_run(void (*fn)(void *, int64_t), void *ctx, int64_t tasks) {
  if (threads <= 1 || tasks <= 1 || pthread_mutex_trylock(&poolBusy) != 0) {
    for (int64_t t = 0; t < tasks; t++) fn(ctx, t);
    return;
  }
  const Job job = {fn, ctx, tasks};
  pthread_mutex_lock(&lock);
  start_helpers();
  participants = started < threads - 1 ? started : threads - 1;
  atomic_store(&doneTasks, 0);
  current = &job;
  atomic_store(&nextTile, 0);
  atomic_fetch_add(&generation, 1);
  pthread_cond_broadcast(&wake);
  pthread_mutex_unlock(&lock);
  take_tasks(&job);
  spin_while_tasks(tasks);
  pthread_mutex_lock(&lock);
  while (atomic_load(&doneTasks) < tasks) pthread_cond_wait(&done, &lock);
  /* A helper that wakes from here on finds no job; one inside it only finds the counter spent. */
  current = NULL;
  while (joined > 0) pthread_cond_wait(&done, &lock);
  pthread_mutex_unlock(&lock);
  pthread_mutex_unlock(&poolBusy);
}

static void tile_task(void *p, int64_t t) { run_tile(p, t); }

int prunelab_gemm_pools(int64_t batch, int64_t m, int64_t n, int64_t k) { return m * n * k * batch >= POOL_MIN_MACS; }

static void run_product(const Product *p) {
  if (!prunelab_gemm_pools(p->tiles / (p->tilesM * p->tilesN), p->m, p->n, p->k)) {
    for (int64_t t = 0; t < p->tiles; t++) run_tile(p, t);
    return;
  }
  prunelab_pool_run(tile_task, (void *)p, p->tiles);
}

#define CHECK(call) do { if ((call) != napi_ok) { napi_throw_error(env, NULL, "openblas-kernels: bad arguments"); return NULL; } } while (0)

/* The side of `parts` near-equal blocks of `n`, rounded up to a multiple of 64 (n itself if one block). */
static int64_t block_side(int64_t n, int64_t parts) {
  if (parts <= 1) return n;
  const int64_t side = ((n + parts - 1) / parts + 63) / 64 * 64;
  return side < n ? side : n;
}

/* The smallest tile of sides tileM x tileN over m x n, in multiply-adds (the last row and column). */
static int64_t smallest_tile(int64_t m, int64_t n, int64_t k, int64_t tileM, int64_t tileN) {
  const int64_t lastM = m - (m - 1) / tileM * tileM, lastN = n - (n - 1) / tileN * tileN;
  return lastM * lastN * k;
}

/* Where every shape-fixed tile of p is at least BLOCKED_MIN_MACS, re-cut p into one tile per pool
 * thread (parts down to 1 until every tile is that large too), splitting columns where B is the
 * larger operand (n > m: each tile packs a column slice of B and all of A), else rows (a square
 * product ran faster so on two threads). Same values (header). */
static void wide_tiles(Product *p, int64_t batch) {
  if (p->k == 0 || smallest_tile(p->m, p->n, p->k, p->tileM, p->tileN) < BLOCKED_MIN_MACS) return;
  const int cutColumns = p->n > p->m;
  for (int64_t parts = threads; parts >= 1; parts--) {
    const int64_t tileM = cutColumns ? p->m : block_side(p->m, parts), tileN = cutColumns ? block_side(p->n, parts) : p->n;
    if (parts > 1 && smallest_tile(p->m, p->n, p->k, tileM, tileN) < BLOCKED_MIN_MACS) continue;
    p->tileM = tileM;
    p->tileN = tileN;
    p->tilesM = (p->m + tileM - 1) / tileM;
    p->tilesN = (p->n + tileN - 1) / tileN;
    p->tiles = p->tilesM * p->tilesN * batch;
    return;
  }
}

/* Tile sides from the shape alone (see the header): blocks of at most MAX_TILE_ROWS x MAX_TILE_COLS,
 * cut further while a pool-sized product has fewer than minTiles. */
static void choose_tiles(Product *p, int64_t batch) {
  int64_t partsM = (p->m + MAX_TILE_ROWS - 1) / MAX_TILE_ROWS, partsN = (p->n + MAX_TILE_COLS - 1) / MAX_TILE_COLS;
  p->tileM = block_side(p->m, partsM);
  p->tileN = block_side(p->n, partsN);
  if (prunelab_gemm_pools(batch, p->m, p->n, p->k)) {
    for (;;) {
      const int64_t tiles = batch * ((p->m + p->tileM - 1) / p->tileM) * ((p->n + p->tileN - 1) / p->tileN);
      if (tiles >= minTiles) break;
      const int canN = block_side(p->n, partsN + 1) >= MIN_TILE_COLS, canM = block_side(p->m, partsM + 1) >= MIN_TILE_ROWS;
      /* Cut the side that is further above its minimum (columns on a tie): tiles stay near square in cost. */
      if (canN && (!canM || p->tileN * MIN_TILE_ROWS >= p->tileM * MIN_TILE_COLS)) p->tileN = block_side(p->n, ++partsN);
      else if (canM) p->tileM = block_side(p->m, ++partsM);
      else break;
    }
  }
  p->tilesM = (p->m + p->tileM - 1) / p->tileM;
  p->tilesN = (p->n + p->tileN - 1) / p->tileN;
  p->tiles = p->tilesM * p->tilesN * batch;
  if (wideTiles) wide_tiles(p, batch);
}

/* Cut a product (sizes and operands set) into its tiles, fixed by the shape alone, and run them. */
static void run_tiled(Product *p, int64_t batch) {
  choose_tiles(p, batch);
  run_product(p);
}

void prunelab_gemm(float *base, int64_t batch, int64_t m, int64_t n, int64_t k, int64_t aOff, int64_t aStride, int transA,
  int64_t bOff, int64_t bStride, int transB, int64_t cOff) {
  if (m == 0 || n == 0 || batch < 1) return;
  Product p = {.base = base, .m = m, .n = n, .k = k, .aOff = aOff, .aStride = aStride, .bOff = bOff, .bStride = bStride,
    .cOff = cOff, .transA = transA, .transB = transB};
  run_tiled(&p, batch);
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
  run_tiled(&p, batch);
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

/* setWideTiles(on) -> whether they were on: tests and benchmarks compare the two cuts. */
static napi_value setWideTiles(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], out;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  bool on = false;
  if (argc != 1 || napi_get_value_bool(env, argv[0], &on) != napi_ok) { napi_throw_type_error(env, NULL, "openblas-kernels: setWideTiles takes a boolean"); return NULL; }
  pthread_mutex_lock(&lock);
  const int was = wideTiles;
  wideTiles = on;
  pthread_mutex_unlock(&lock);
  CHECK(napi_get_boolean(env, was != 0, &out));
  return out;
}

static napi_value describe(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value obj, cfg, count;
  CHECK(napi_create_object(env, &obj));
  CHECK(napi_create_string_utf8(env, openblas_get_config(), NAPI_AUTO_LENGTH, &cfg));
  CHECK(napi_create_int32(env, threads, &count));
  CHECK(napi_set_named_property(env, obj, "config", cfg));
  CHECK(napi_set_named_property(env, obj, "threads", count));
  napi_value wide, fewest;
  CHECK(napi_get_boolean(env, wideTiles != 0, &wide));
  CHECK(napi_set_named_property(env, obj, "wideTiles", wide));
  CHECK(napi_create_int32(env, minTiles, &fewest));
  CHECK(napi_set_named_property(env, obj, "minTiles", fewest));
  return obj;
}

/* SparseGPT's kernels, defined at the end of the file. */
static napi_value upperCholeskyOfInverse(napi_env env, napi_callback_info info);
static napi_value obsSweepBlock(napi_env env, napi_callback_info info);
static napi_value hostGemm(napi_env env, napi_callback_info info);
/* The elementwise kernels (native/elementwise-kernels.c); weak, so that a build without that file
 * (bench/addon-ab.ts compiles revisions by hand) still loads, without them. */
extern napi_status elementwise_register(napi_env env, napi_value exports) __attribute__((weak));
/* FISTAPruner's host pass (native/fista-kernels.c) and its cut (native/row-masks.c). */
napi_value fistaAcceptStep(napi_env env, napi_callback_info info);
napi_value fistaCutRows(napi_env env, napi_callback_info info);
napi_value fistaChange(napi_env env, napi_callback_info info);
napi_value fistaErrors(napi_env env, napi_callback_info info);
napi_value fistaPrepareGram(napi_env env, napi_callback_info info);
/* Per-row mask selection, a mask applied and zeros counted, in native/row-masks.c. */
napi_value maskRows(napi_env env, napi_callback_info info);
napi_value maskRowsScaled(napi_env env, napi_callback_info info);
napi_value maskedCopy(napi_env env, napi_callback_info info);
napi_value countZeros(napi_env env, napi_callback_info info);

static napi_value init(napi_env env, napi_value exports) {
  openblas_set_num_threads(1); /* every OpenBLAS call is one tile on one thread (see the header) */
  {
    const int cores = tile_cores();
    minTiles = cores > MIN_TILES ? cores : MIN_TILES;
  }
  {
    const char *cfg = openblas_get_config();
    char padded[512];
    snprintf(padded, sizeof padded, " %s ", cfg ? cfg : "");
    for (size_t i = 0; i < sizeof WIDE_TILE_CORES / sizeof WIDE_TILE_CORES[0]; i++) if (strstr(padded, WIDE_TILE_CORES[i])) wideTiles = 1;
  }
  napi_property_descriptor props[] = {
    {"gemm", NULL, gemm, NULL, NULL, NULL, napi_default, NULL},
    {"setThreads", NULL, setThreads, NULL, NULL, NULL, napi_default, NULL},
    {"setWideTiles", NULL, setWideTiles, NULL, NULL, NULL, napi_default, NULL},
    {"describe", NULL, describe, NULL, NULL, NULL, napi_default, NULL},
    {"upperCholeskyOfInverse", NULL, upperCholeskyOfInverse, NULL, NULL, NULL, napi_default, NULL},
    {"obsSweepBlock", NULL, obsSweepBlock, NULL, NULL, NULL, napi_default, NULL},
    {"hostGemm", NULL, hostGemm, NULL, NULL, NULL, napi_default, NULL},
    {"fistaAcceptStep", NULL, fistaAcceptStep, NULL, NULL, NULL, napi_default, NULL},
    {"fistaCutRows", NULL, fistaCutRows, NULL, NULL, NULL, napi_default, NULL},
    {"fistaChange", NULL, fistaChange, NULL, NULL, NULL, napi_default, NULL},
    {"fistaErrors", NULL, fistaErrors, NULL, NULL, NULL, napi_default, NULL},
    {"fistaPrepareGram", NULL, fistaPrepareGram, NULL, NULL, NULL, napi_default, NULL},
    {"maskRows", NULL, maskRows, NULL, NULL, NULL, napi_default, NULL},
    {"maskRowsScaled", NULL, maskRowsScaled, NULL, NULL, NULL, napi_default, NULL},
    {"maskedCopy", NULL, maskedCopy, NULL, NULL, NULL, napi_default, NULL},
    {"countZeros", NULL, countZeros, NULL, NULL, NULL, napi_default, NULL},
  };
  if (napi_define_properties(env, exports, sizeof props / sizeof props[0], props) != napi_ok) return NULL;
  if (elementwise_register && elementwise_register(env, exports) != napi_ok) return NULL;
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)

/* ---- SparseGPT's factor and in-block sweep (src/linalg/backend.ts, src/prune/obs.ts) ---- */

extern void spotrf_(const char *uplo, const int *n, float *a, const int *lda, int *info);
extern void strtri_(const char *uplo, const char *diag, const int *n, float *a, const int *lda, int *info);

/* upperCholeskyOfInverse(heap, off, n) -> [pivot, value]: the row-major n x n float32 matrix at
 * element offset `off` holds A (a fresh copy the caller owns). In place: JAJ (A with both orders
 * reversed: the reversal of a row-major square is that of its flat array), JAJ = L L^T (its lower
 * triangle read), L^-1, the upper triangle zeroed, then reversed back: U = J L^-1 J upper with
 * A^-1 = U^T U. LAPACK is column-major, where a row-major lower triangle is an upper one.
 * Up to FACTOR_BLOCK, one LAPACK spotrf and strtri on one thread. Larger, blocked on the pool, so
 * the O(n^3) factor of a large operator's input (LLaMA-7B's down_proj: 11008) uses every core:
 * the Cholesky factor right-looking (spotrf on each diagonal block, strsm on the panel below in
 * row chunks, the trailing lower triangle updated in FACTOR_BLOCK tiles by sgemm), and L^-1 out
 * of place, one strsm per INVERSE_CHUNK columns (L X = I, each chunk independent; n^2 floats more
 * for the duration, strtri in place where that allocation fails). Blocks, chunks and tiles are
 * fixed by n and each is one single-threaded OpenBLAS call (set in init), so the result is the
 * same for any thread count.
 * pivot -1: done; else the 0-based index in the reversed order where the factorisation met a
 * pivot <= 0 or not finite, and that pivot. */

enum { FACTOR_BLOCK = 256, INVERSE_CHUNK = 128 };

typedef struct {
  float *a, *x;
  int64_t n, k0, kb, t0;
} FactorStep;

static int64_t min64(int64_t x, int64_t y) { return x < y ? x : y; }

/* Rows [t0 + t*FACTOR_BLOCK, ...) of the panel below diagonal block k: L_ik = A_ik · L_kk^-T. */
static void factor_panel_task(void *ctx, int64_t t) {
  const FactorStep *f = ctx;
  const int64_t r = f->t0 + t * FACTOR_BLOCK, rows = min64(FACTOR_BLOCK, f->n - r);
  cblas_strsm(CblasRowMajor, CblasRight, CblasLower, CblasTrans, CblasNonUnit, (int)rows, (int)f->kb, 1.0f,
    f->a + f->k0 * f->n + f->k0, (int)f->n, f->a + r * f->n + f->k0, (int)f->n);
}

/* Lower tile t (row-major order of the tiles on or below the diagonal) of the trailing matrix:
 * A_ij -= L_ik · L_jk^T. A diagonal tile is updated whole; its upper part is never read. */
static void factor_update_task(void *ctx, int64_t t) {
  const FactorStep *f = ctx;
  int64_t ti = 0;
  while ((ti + 1) * (ti + 2) / 2 <= t) ti++;
  const int64_t tj = t - ti * (ti + 1) / 2;
  const int64_t r = f->t0 + ti * FACTOR_BLOCK, c = f->t0 + tj * FACTOR_BLOCK;
  const int64_t rows = min64(FACTOR_BLOCK, f->n - r), cols = min64(FACTOR_BLOCK, f->n - c);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rows, (int)cols, (int)f->kb, -1.0f,
    f->a + r * f->n + f->k0, (int)f->n, f->a + c * f->n + f->k0, (int)f->n, 1.0f, f->a + r * f->n + c, (int)f->n);
}

/* Columns [c0, c0 + INVERSE_CHUNK) of X = L^-1: rows c0.. of those columns of the identity, solved
 * against L's trailing square from c0 (the rows above are zero). */
static void inverse_chunk_task(void *ctx, int64_t t) {
  const FactorStep *f = ctx;
  const int64_t n = f->n, c0 = t * INVERSE_CHUNK, w = min64(INVERSE_CHUNK, n - c0);
  for (int64_t r = c0; r < n; r++) for (int64_t c = c0; c < c0 + w; c++) f->x[r * n + c] = r == c ? 1.0f : 0.0f;
  cblas_strsm(CblasRowMajor, CblasLeft, CblasLower, CblasNoTrans, CblasNonUnit, (int)(n - c0), (int)w, 1.0f,
    f->a + c0 * n + c0, (int)n, f->x + c0 * n + c0, (int)n);
}

/* The first pivot of diagonal block [k0, k0 + kb) after its spotrf (info `res`) that is not a
 * finite positive number, as the unblocked path reports it; -1 if none. */
static int64_t block_pivot(const float *a, int64_t n, int64_t k0, int64_t kb, int res) {
  if (res > 0) return k0 + res - 1;
  /* OpenBLAS's potrf lets a NaN pivot through (it tests ajj <= 0): find the first one. */
  for (int64_t j = k0; j < k0 + kb; j++) {
    const float d = a[j * n + j];
    if (!(d > 0) || d != d || d - d != 0) return j;
  }
  return -1;
}

/* The lower Cholesky factor of row-major a in place, blocked on the pool (up to FACTOR_BLOCK: one
 * spotrf on the whole); the first bad pivot, or -1. */
static int64_t lower_cholesky(float *a, int64_t n) {
  for (int64_t k0 = 0; k0 < n; k0 += FACTOR_BLOCK) {
    const int64_t kb = min64(FACTOR_BLOCK, n - k0);
    const int kbi = (int)kb, ld = (int)n;
    int res = 0;
    spotrf_("U", &kbi, a + k0 * n + k0, &ld, &res);
    const int64_t pivot = block_pivot(a, n, k0, kb, res);
    if (pivot >= 0) return pivot;
    const int64_t t0 = k0 + kb;
    if (t0 >= n) break;
    const int64_t tilesM = (n - t0 + FACTOR_BLOCK - 1) / FACTOR_BLOCK;
    FactorStep f = {.a = a, .n = n, .k0 = k0, .kb = kb, .t0 = t0};
    prunelab_pool_run(factor_panel_task, &f, tilesM);
    prunelab_pool_run(factor_update_task, &f, tilesM * (tilesM + 1) / 2);
  }
  return -1;
}

/* L^-1 of the lower factor in place (the upper triangle left as it is): one strtri up to
 * FACTOR_BLOCK (or where the out-of-place copy cannot be allocated), else on the pool. */
static void lower_inverse(float *a, int64_t n) {
  float *x = n > FACTOR_BLOCK ? malloc((size_t)n * (size_t)n * sizeof(float)) : NULL;
  if (!x) {
    const int ni = (int)n;
    int res = 0;
    strtri_("U", "N", &ni, a, &ni, &res);
    return;
  }
  FactorStep f = {.a = a, .x = x, .n = n};
  prunelab_pool_run(inverse_chunk_task, &f, (n + INVERSE_CHUNK - 1) / INVERSE_CHUNK);
  for (int64_t r = 0; r < n; r++) memcpy(a + r * n, x + r * n, (size_t)(r + 1) * sizeof(float));
  free(x);
}
static napi_value upperCholeskyOfInverse(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc != 3) { napi_throw_error(env, NULL, "openblas-kernels: upperCholeskyOfInverse takes 3 arguments"); return NULL; }
  void *data = NULL;
  size_t bytes = 0;
  CHECK(napi_get_arraybuffer_info(env, argv[0], &data, &bytes));
  int ok = 1;
  const int64_t off = (int64_t)num(env, argv[1], &ok), n64 = (int64_t)num(env, argv[2], &ok);
  if (!ok || off < 0 || n64 < 0 || n64 > 46340 || off + n64 * n64 > (int64_t)(bytes / 4)) {
    napi_throw_range_error(env, NULL, "openblas-kernels: upperCholeskyOfInverse operand outside the buffer");
    return NULL;
  }
  float *a = (float *)data + off;
  const int n = (int)n64;
  int64_t pivot = -1;
  double value = 0;
  if (n > 0) {
    for (int64_t i = 0, j = n64 * n64 - 1; i < j; i++, j--) { const float t = a[i]; a[i] = a[j]; a[j] = t; }
    pivot = lower_cholesky(a, n64);
    if (pivot >= 0) {
      value = a[pivot * n + pivot];
    } else {
      lower_inverse(a, n64);
      for (int64_t i = 0; i < n; i++) for (int64_t j = i + 1; j < n; j++) a[i * n + j] = 0.0f;
      for (int64_t i = 0, j = n64 * n64 - 1; i < j; i++, j--) { const float t = a[i]; a[i] = a[j]; a[j] = t; }
    }
  }
  napi_value out, p, v;
  CHECK(napi_create_array_with_length(env, 2, &out));
  CHECK(napi_create_double(env, (double)pivot, &p));
  CHECK(napi_create_double(env, value, &v));
  CHECK(napi_set_element(env, out, 0, p));
  CHECK(napi_set_element(env, out, 1, v));
  return out;
}

/* One block of SparseGPT's float32 sweep (obs.ts obsSweepNative: the same operations in the same
 * order as its TypeScript, float64). */
typedef struct {
  const float *w0, *upd, *U;
  const double *invD2;
  uint8_t *mask;
  float *weight, *errT;
  double *wb, *err;
  int32_t *nzIdx, *nzCnt;
  int64_t rows, count, cols, i1, B, nmN, nmM;
  int cut;          /* 0: N:M during the sweep, 1: the block's k smallest, 2: each row's k smallest */
  int64_t k;
  double *scores, *scratch; /* [rows, count]: scores for cuts 1 and 2, scratch for cut 2's selection */
  atomic_llong nanAt; /* smallest index of a NaN score (block-local for cuts 1, 2; flat for N:M), or INT64_MAX */
} SweepBlock;

/* *at = min(*at, v), atomically. */
static void atomic_min_ll(atomic_llong *at, long long v) {
  long long cur = atomic_load(at);
  while (v < cur && !atomic_compare_exchange_weak(at, &cur, v)) {}
}

/* The value of rank k (0-based) in ascending order of a[0..n) (reordered): any exact selection
 * gives the same value, which is all masks.ts's kthSmallest result is used for. */
static int cmp_double(const void *x, const void *y) {
  const double a = *(const double *)x, b = *(const double *)y;
  return a < b ? -1 : a > b ? 1 : 0;
}
static double kth_smallest(double *a, int64_t n, int64_t k) {
  int64_t lo = 0, hi = n - 1;
  for (int round = 0; hi > lo; round++) {
    if (round > 64 || hi - lo < 16) {
      qsort(a + lo, (size_t)(hi - lo + 1), sizeof(double), cmp_double);
      return a[k];
    }
    const int64_t mid = lo + (hi - lo) / 2;
    double x = a[lo], y = a[mid], z = a[hi], t;
    if (x > y) { t = x; x = y; y = t; }
    if (y > z) y = z;
    const double pivot = x > y ? x : y;
    int64_t i = lo - 1, j = hi + 1;
    for (;;) {
      do i++; while (a[i] < pivot);
      do j--; while (a[j] > pivot);
      if (i >= j) break;
      t = a[i]; a[i] = a[j]; a[j] = t;
    }
    if (k <= j) hi = j; else lo = j + 1;
  }
  return a[k];
}

/* masks.ts pruneBelow: prune the k entries below t, ties at t in index order. `mask` has stride
 * `mstride` per `len`-long row of scores (len = count: one row; whole block: rows of count). */
static void prune_below(const double *scores, int64_t len, int64_t count, double t, int64_t k, uint8_t *mask, int64_t mstride) {
  int64_t below = 0;
  for (int64_t j = 0; j < len; j++) below += scores[j] < t;
  int64_t ties = k - below;
  /* Row by row of `count` scores (no division an entry: it cost more than the rest of the pass). */
  for (int64_t r0 = 0; r0 < len; r0 += count, mask += mstride) {
    const double *sc = scores + r0;
    for (int64_t c = 0; c < count; c++) {
      const double v = sc[c];
      if (v < t) mask[c] = 0;
      else if (v == t && ties > 0) { mask[c] = 0; ties--; }
    }
  }
}

/* Rows a sweep task takes; the widest block whose errors a task stages for errT (sweep_task). */
enum { SWEEP_ROWS = 16, STAGE_COLS = 256 };

/* Vectorised once per AVX width: the update w[j] -= e·u[j] is elementwise, so every width gives the
 * same values (-ffp-contract=off: no fused multiply-adds). */
__attribute__((target_clones("avx512f", "avx2", "default"), optimize("O3"))) static void sweep_row(SweepBlock *s, int64_t r, float *stage) {
  double *w = s->wb + r * s->count;
  uint8_t *mask = s->mask + r * s->cols + s->i1;
  const int64_t count = s->count, m = s->nmM;
  int32_t nz = 0;
  for (int64_t c = 0; c < count; c++) {
    if (m > 0 && c % m == 0) {
      /* N:M: prune the n lowest current w^2/U_jj^2 of the group (ties: lower index). */
      for (int64_t p = 0; p < s->nmN; p++) {
        int64_t best = -1;
        double bestV = 0;
        for (int64_t t = 0; t < m; t++) {
          if (mask[c + t] == 0) continue;
          const double v = w[c + t] * w[c + t] * s->invD2[s->i1 + c + t];
          if (v != v) {
            atomic_min_ll(&s->nanAt, r * s->cols + s->i1 + c + t);
            return;
          }
          if (best < 0 || v < bestV) { best = t; bestV = v; }
        }
        mask[c + best] = 0;
      }
    }
    if (mask[c]) continue;
    const float *u = s->U + c * count;
    const double e = w[c] / (double)u[c];
    s->err[r * s->B + c] = e;
    s->nzIdx[r * s->B + nz++] = (int32_t)c;
    /* errT is [cols, rows]: staged (stride SWEEP_ROWS) and written a column's rows at a time by sweep_task. */
    if (stage) stage[c * SWEEP_ROWS] = (float)e;
    else s->errT[(s->i1 + c) * s->rows + r] = (float)e;
    w[c] = 0;
    if (e != 0) for (int64_t j = c + 1; j < count; j++) w[j] -= e * (double)u[j];
  }
  s->nzCnt[r] = nz;
  float *out = s->weight + r * s->cols + s->i1;
  for (int64_t c = 0; c < count; c++) if (mask[c]) out[c] = (float)w[c];
}

/* fn(ctx, t) for t < tasks, work on block s: on the pool when the block is worth waking it for, else here. */
static void run_block_tasks(const SweepBlock *s, void (*fn)(void *, int64_t), void *ctx, int64_t tasks) {
  if (s->rows * s->count * s->count >= POOL_MIN_MACS) prunelab_pool_run(fn, ctx, tasks);
  else for (int64_t t = 0; t < tasks; t++) fn(ctx, t);
}

/* Rows [t·SWEEP_ROWS, …): the block after its pending update (obs.ts: wb[i] -= u[i] in float64)
 * and, for cuts 1 and 2, its scores wb² / U_jj² (the smallest index of a NaN one kept). */
static void prepare_rows(void *ctx, int64_t t) {
  SweepBlock *s = ctx;
  const int64_t r0 = t * SWEEP_ROWS, r1 = r0 + SWEEP_ROWS < s->rows ? r0 + SWEEP_ROWS : s->rows;
  for (int64_t r = r0; r < r1; r++) {
    const float *w = s->w0 + r * s->cols + s->i1;
    double *b = s->wb + r * s->count;
    for (int64_t c = 0; c < s->count; c++) b[c] = w[c];
    if (s->i1 > 0) { const float *u = s->upd + r * s->count; for (int64_t c = 0; c < s->count; c++) b[c] -= u[c]; }
    if (!s->scores) continue;
    double *sc = s->scores + r * s->count;
    for (int64_t c = 0; c < s->count; c++) {
      sc[c] = b[c] * b[c] * s->invD2[s->i1 + c];
      if (sc[c] != sc[c]) { atomic_min_ll(&s->nanAt, r * s->count + c); break; }
    }
  }
}

/* Rows [t·SWEEP_ROWS, …): cut 2's selection in each row (masks.ts maskPerRow), then the sweep. */
static void sweep_task(void *ctx, int64_t t) {
  SweepBlock *s = ctx;
  const int64_t r0 = t * SWEEP_ROWS, r1 = r0 + SWEEP_ROWS < s->rows ? r0 + SWEEP_ROWS : s->rows;
  /* The task's errors for errT, a column's SWEEP_ROWS rows together: one store a cache line where
   * writing each error to its place in the [cols, rows] array touched a line an error (a quarter of
   * the sweep's time on a 1408-row block). Kept entries stage 0, which errT already holds there. */
  float stage[STAGE_COLS * SWEEP_ROWS];
  const int staged = s->count <= STAGE_COLS;
  if (staged) memset(stage, 0, sizeof(float) * (size_t)(s->count * SWEEP_ROWS));
  for (int64_t r = r0; r < r1; r++) {
    if (s->cut == 2 && s->k > 0) {
      const int64_t o = r * s->count;
      memcpy(s->scratch + o, s->scores + o, (size_t)s->count * sizeof(double));
      prune_below(s->scores + o, s->count, s->count, kth_smallest(s->scratch + o, s->count, s->k - 1), s->k,
                  s->mask + r * s->cols + s->i1, s->cols);
    }
    sweep_row(s, r, staged ? stage + (r - r0) : NULL);
  }
  if (staged) for (int64_t c = 0; c < s->count; c++) memcpy(s->errT + (s->i1 + c) * s->rows + r0, stage + c * SWEEP_ROWS, sizeof(float) * (size_t)(r1 - r0));
}

/* Cut 1 on the pool: the block's k smallest scores pruned, ties at the threshold in index order,
 * the very mask of kth_smallest + prune_below over the whole block (which ran on one thread between
 * the block's two pool passes). The scores are >= +0 (w² · 1/U_jj², NaN ruled out before), so their
 * bit patterns read as uint64 order as their values do: the threshold is found by radix select,
 * RADIX_BITS at a time, each digit's histogram counted per chunk of rows on the pool and the chunks'
 * counts added here (exact integers: the same for any thread count), until at most CUT_FEW candidates
 * share the digits found; those are gathered in index order and the threshold chosen among them. The
 * entries equal to it are all candidates, so each chunk's share of the pruned ties is known before the
 * chunks mark their rows on the pool. A negative score (not expected) would break the bits' order:
 * then every score is a candidate, the selection of kth_smallest + prune_below with the marking on
 * the pool. Returns 0, or -1 out of memory. */
enum { CUT_CHUNKS = 16, RADIX_BITS = 11, RADIX_BINS = 1 << RADIX_BITS, CUT_FEW = 4096 };

typedef struct {
  SweepBlock *s;
  int64_t chunkRows, chunks;
  int shift, width;
  uint64_t prefix, prefixMask;
  uint32_t *hist;      /* [chunks][RADIX_BINS + 1] */
  int64_t *offset;     /* [chunks + 1]: each chunk's first candidate */
  double *cand;
  double t;
  int64_t ties, *tieStart; /* [chunks]: the index among the block's ties of each chunk's first tie */
} BlockCut;

static inline uint64_t score_bits(double v) {
  uint64_t u;
  memcpy(&u, &v, sizeof u);
  return u;
}

static void cut_span(const BlockCut *c, int64_t chunk, const double **from, int64_t *len) {
  const SweepBlock *s = c->s;
  const int64_t r0 = chunk * c->chunkRows, r1 = r0 + c->chunkRows < s->rows ? r0 + c->chunkRows : s->rows;
  *from = s->scores + r0 * s->count;
  *len = (r1 - r0) * s->count;
}

/* Without branches (a score's match is as unpredictable as the data): a score outside the prefix
 * counts in the extra bin RADIX_BINS, read only to find a negative score after the first digit. */
static void cut_histogram(void *ctx, int64_t chunk) {
  const BlockCut *c = ctx;
  const double *v;
  int64_t len;
  cut_span(c, chunk, &v, &len);
  uint32_t *h = c->hist + chunk * (RADIX_BINS + 1);
  memset(h, 0, sizeof(uint32_t) * (RADIX_BINS + 1));
  const uint64_t digit = ((uint64_t)1 << c->width) - 1, prefixMask = c->prefixMask, prefix = c->prefix;
  const int shift = c->shift;
  for (int64_t i = 0; i < len; i++) {
    const uint64_t b = score_bits(v[i]), d = (b >> shift) & digit;
    h[(b & prefixMask) == prefix ? d : RADIX_BINS]++;
  }
}

static void cut_gather(void *ctx, int64_t chunk) {
  const BlockCut *c = ctx;
  const double *v;
  int64_t len;
  cut_span(c, chunk, &v, &len);
  double *out = c->cand + c->offset[chunk];
  for (int64_t i = 0; i < len; i++) if ((score_bits(v[i]) & c->prefixMask) == c->prefix) *out++ = v[i];
}

/* Rows of a chunk: the scores below t pruned without branches (half of them, in no order; the
 * loop vectorises), then, in a row holding any, the ties at t in index order. */
__attribute__((target_clones("avx512f", "avx2", "default"), optimize("O3"))) static void cut_mark(void *ctx, int64_t chunk) {
  const BlockCut *c = ctx;
  const SweepBlock *s = c->s;
  const int64_t r0 = chunk * c->chunkRows, r1 = r0 + c->chunkRows < s->rows ? r0 + c->chunkRows : s->rows, count = s->count;
  const double t = c->t;
  int64_t tie = c->tieStart[chunk];
  for (int64_t r = r0; r < r1; r++) {
    const double *restrict sc = s->scores + r * count;
    uint8_t *restrict mask = s->mask + r * s->cols + s->i1;
    int64_t equal = 0;
    for (int64_t j = 0; j < count; j++) {
      mask[j] = (uint8_t)(mask[j] * (sc[j] >= t));
      equal += sc[j] == t;
    }
    if (equal == 0) continue;
    for (int64_t j = 0; j < count; j++) {
      if (sc[j] == t) {
        if (tie < c->ties) mask[j] = 0;
        tie++;
      }
    }
  }
}

static int block_cut(SweepBlock *s, int64_t k) {
  const int64_t n = s->rows * s->count, bins = RADIX_BINS + 1;
  BlockCut c = {.s = s};
  c.chunks = s->rows < CUT_CHUNKS ? s->rows : CUT_CHUNKS;
  c.chunkRows = (s->rows + c.chunks - 1) / c.chunks;
  c.chunks = (s->rows + c.chunkRows - 1) / c.chunkRows;
  c.hist = malloc((size_t)(c.chunks * bins) * sizeof(uint32_t));
  c.offset = malloc((size_t)(c.chunks + 1) * sizeof(int64_t));
  c.tieStart = malloc((size_t)c.chunks * sizeof(int64_t));
  double *sel = NULL;
  int status = -1;
  if (!c.hist || !c.offset || !c.tieStart) goto out;
  int64_t rank = k - 1, below = 0, left = n;
  /* The sign bit is the first prefix (0: every score >= +0); the digits follow it down to bit 0. */
  int shift = 63;
  c.prefixMask = (uint64_t)1 << 63;
  c.prefix = 0;
  /* Each chunk's count of candidates: all its entries until a digit is chosen. */
  for (int64_t ch = 0; ch < c.chunks; ch++) {
    const double *v;
    int64_t len;
    cut_span(&c, ch, &v, &len);
    c.offset[ch] = len;
  }
  while (left > CUT_FEW && shift > 0) {
    c.width = shift < RADIX_BITS ? shift : RADIX_BITS;
    c.shift = shift -= c.width;
    run_block_tasks(s, cut_histogram, &c, c.chunks);
    if (shift == 63 - RADIX_BITS) {
      int64_t negative = 0;
      for (int64_t ch = 0; ch < c.chunks; ch++) negative += c.hist[ch * bins + RADIX_BINS];
      if (negative > 0) { shift = 63; break; } /* no digit chosen: every score stays a candidate */
    }
    int64_t cum = 0, bin = 0, inBin = 0;
    for (bin = 0; bin < ((int64_t)1 << c.width); bin++) {
      inBin = 0;
      for (int64_t ch = 0; ch < c.chunks; ch++) inBin += c.hist[ch * bins + bin];
      if (cum + inBin > rank) break;
      cum += inBin;
    }
    rank -= cum;
    below += cum;
    left = inBin;
    c.prefix |= (uint64_t)bin << c.shift;
    c.prefixMask |= ((((uint64_t)1 << c.width) - 1) << c.shift);
    for (int64_t ch = 0; ch < c.chunks; ch++) c.offset[ch] = c.hist[ch * bins + bin];
  }
  if (shift == 63) c.prefixMask = 0; /* no digit chosen (few or negative scores): every score is a candidate */
  /* Chunk counts to offsets, then the candidates in index order. */
  int64_t at = 0;
  for (int64_t ch = 0; ch < c.chunks; ch++) { const int64_t cnt = c.offset[ch]; c.offset[ch] = at; at += cnt; }
  c.offset[c.chunks] = at;
  c.cand = malloc((size_t)(at > 0 ? at : 1) * sizeof(double));
  sel = malloc((size_t)(at > 0 ? at : 1) * sizeof(double));
  if (!c.cand || !sel) goto out;
  run_block_tasks(s, cut_gather, &c, c.chunks);
  memcpy(sel, c.cand, (size_t)at * sizeof(double));
  c.t = kth_smallest(sel, at, rank);
  int64_t ties = 0;
  for (int64_t ch = 0; ch < c.chunks; ch++) {
    c.tieStart[ch] = ties;
    for (int64_t i = c.offset[ch]; i < c.offset[ch + 1]; i++) {
      below += c.cand[i] < c.t;
      ties += c.cand[i] == c.t;
    }
  }
  c.ties = k - below;
  run_block_tasks(s, cut_mark, &c, c.chunks);
  status = 0;
out:
  free(sel);
  free(c.cand);
  free(c.hist);
  free(c.offset);
  free(c.tieStart);
  return status;
}

/* obsSweepBlock(w0, upd, U, invD2, mask, weight, errT, wb, err, nzIdx, nzCnt,
 *               rows, count, cols, i1, B, cut, k, nmN, nmM) -> -1 or a NaN score's index.
 * Block [i1, i1+count) of the sweep: wb = w0's block - upd (upd: the pending lazy update
 * [rows, count], ignored at i1 = 0); the cut on wb^2 / U_jj^2 (cut 1: the k smallest of the block,
 * 2: of each row, 0: N:M groups chosen during the sweep); then each row's OBS sweep against U's
 * diagonal block U [count, count]: the errors to err / nzIdx / nzCnt (row stride B) and errT
 * ([cols, rows]), kept weights to weight. Rows are independent, so they are shared among threads
 * and the result does not depend on how many. NaN: the block-local index of a NaN score (cut 1,
 * 2; masks.ts words those), or the flat index of a NaN N:M score. */
static napi_value obsSweepBlock(napi_env env, napi_callback_info info) {
  size_t argc = 20;
  napi_value argv[20];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc != 20) { napi_throw_error(env, NULL, "openblas-kernels: obsSweepBlock takes 20 arguments"); return NULL; }
  int ok = 1;
  SweepBlock s;
  s.rows = (int64_t)num(env, argv[11], &ok); s.count = (int64_t)num(env, argv[12], &ok); s.cols = (int64_t)num(env, argv[13], &ok);
  s.i1 = (int64_t)num(env, argv[14], &ok); s.B = (int64_t)num(env, argv[15], &ok);
  const int cut = (int)num(env, argv[16], &ok);
  const int64_t k = (int64_t)num(env, argv[17], &ok);
  s.nmN = (int64_t)num(env, argv[18], &ok); s.nmM = (int64_t)num(env, argv[19], &ok);
  if (!ok || s.rows < 0 || s.count < 0 || s.i1 < 0 || s.count > s.B || s.i1 + s.count > s.cols || cut < 0 || cut > 2 ||
      k < 0 || k > (cut == 1 ? s.rows * s.count : s.count) || s.nmN < 0 || s.nmM < 0 || (cut == 0) != (s.nmM > 0) ||
      (s.nmM > 0 && (s.nmN >= s.nmM || s.count % s.nmM != 0))) {
    napi_throw_range_error(env, NULL, "openblas-kernels: obsSweepBlock: bad sizes");
    return NULL;
  }
  const size_t rc = (size_t)(s.rows * s.count);
  s.w0 = typed(env, argv[0], napi_float32_array, (size_t)(s.rows * s.cols), &ok);
  s.upd = typed(env, argv[1], napi_float32_array, s.i1 > 0 ? rc : 0, &ok);
  s.U = typed(env, argv[2], napi_float32_array, (size_t)(s.count * s.count), &ok);
  s.invD2 = typed(env, argv[3], napi_float64_array, (size_t)s.cols, &ok);
  s.mask = typed(env, argv[4], napi_uint8_array, (size_t)(s.rows * s.cols), &ok);
  s.weight = typed(env, argv[5], napi_float32_array, (size_t)(s.rows * s.cols), &ok);
  s.errT = typed(env, argv[6], napi_float32_array, (size_t)(s.rows * s.cols), &ok);
  s.wb = typed(env, argv[7], napi_float64_array, rc, &ok);
  s.err = typed(env, argv[8], napi_float64_array, (size_t)(s.rows * s.B), &ok);
  s.nzIdx = typed(env, argv[9], napi_int32_array, (size_t)(s.rows * s.B), &ok);
  s.nzCnt = typed(env, argv[10], napi_int32_array, (size_t)s.rows, &ok);
  if (!ok) { napi_throw_range_error(env, NULL, "openblas-kernels: obsSweepBlock: arrays of the wrong type or too short"); return NULL; }
  s.cut = cut;
  s.k = k;
  s.scores = s.scratch = NULL;
  if (cut != 0 && k > 0) {
    s.scores = malloc(rc * sizeof(double));
    if (cut == 2) s.scratch = malloc(rc * sizeof(double));
    if (!s.scores || (cut == 2 && !s.scratch)) { free(s.scores); free(s.scratch); napi_throw_error(env, NULL, "openblas-kernels: out of memory"); return NULL; }
  }
  atomic_store(&s.nanAt, INT64_MAX);
  /* Rows are independent (the selection of cut 2 too, and cut 1's is made between the two passes),
   * so they are shared among the pool's threads and the result does not depend on how many. */
  const int64_t tasks = (s.rows + SWEEP_ROWS - 1) / SWEEP_ROWS;
  run_block_tasks(&s, prepare_rows, &s, tasks);
  long long nanAt = atomic_load(&s.nanAt);
  if (nanAt == INT64_MAX) {
    if (cut == 1 && k > 0) {
      /* obs.ts selectBlockMask then masks.ts maskPerMatrix, on the whole block, on the pool. */
      if (block_cut(&s, k) < 0) { free(s.scores); free(s.scratch); napi_throw_error(env, NULL, "openblas-kernels: out of memory"); return NULL; }
    }
    run_block_tasks(&s, sweep_task, &s, tasks);
    nanAt = atomic_load(&s.nanAt);
  }
  free(s.scores);
  free(s.scratch);
  napi_value out;
  CHECK(napi_create_double(env, nanAt == INT64_MAX ? -1.0 : (double)nanAt, &out));
  return out;
}

/* hostGemm(a, b, c, m, n, k, transA, transB): C[m x n] = op(A) . op(B) on three Float32Arrays
 * (row-major, contiguous), by `gemm`'s tiles and pool: the same values for any thread count
 * (transB 2: B symmetric, C = A . B with B packed the cheaper way, see SYMMETRIC_MIN_MACS). The
 * tiles address operands by element offset from one base, here C's (any Float32Array is 4-byte
 * aligned, so the differences are whole elements). */
static napi_value hostGemm(napi_env env, napi_callback_info info) {
  size_t argc = 8;
  napi_value argv[8];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc != 8) { napi_throw_error(env, NULL, "openblas-kernels: hostGemm takes 8 arguments"); return NULL; }
  int ok = 1;
  Product p;
  p.m = (int64_t)num(env, argv[3], &ok); p.n = (int64_t)num(env, argv[4], &ok); p.k = (int64_t)num(env, argv[5], &ok);
  p.transA = num(env, argv[6], &ok) != 0;
  const double transB = num(env, argv[7], &ok);
  p.transB = transB == 2 ? 2 : transB != 0;
  if (!ok || p.m < 0 || p.n < 0 || p.k < 0) { napi_throw_range_error(env, NULL, "openblas-kernels: hostGemm: bad sizes"); return NULL; }
  if (p.transB == 2 && p.k != p.n) { napi_throw_range_error(env, NULL, "openblas-kernels: hostGemm: a symmetric B (transB 2) must be square"); return NULL; }
  const float *a = typed(env, argv[0], napi_float32_array, (size_t)(p.m * p.k), &ok);
  const float *b = typed(env, argv[1], napi_float32_array, (size_t)(p.k * p.n), &ok);
  float *c = typed(env, argv[2], napi_float32_array, (size_t)(p.m * p.n), &ok);
  if (!ok) { napi_throw_range_error(env, NULL, "openblas-kernels: hostGemm: arrays of the wrong type or too short"); return NULL; }
  if (p.m == 0 || p.n == 0) return NULL;
  p.base = c;
  p.aOff = a - c; p.bOff = b - c; p.cOff = 0;
  p.aStride = p.bStride = 0;
  run_tiled(&p, 1);
  return NULL;
}
