/* The addon's thread pool (native/openblas-kernels.c) as its other kernels use it. */
#ifndef PRUNELAB_POOL_H
#define PRUNELAB_POOL_H
#include <stdint.h>

/* fn(ctx, t) for every t < tasks, on the pool's threads and the caller's; which thread runs a
 * task must not change its result. */
extern void prunelab_pool_run(void (*fn)(void *, int64_t), void *ctx, int64_t tasks);

/* The pool's thread count (the caller's included): for kernels that size their tasks by it, never their results. */
extern int prunelab_pool_threads(void);

/* Rows per task of a row-split kernel: about 16,384 entries each (a split by rows changes no
 * result of these kernels; this only sizes the work per task). */
static inline int64_t prunelab_rows_per_task(int64_t cols) {
  const int64_t r = 16384 / (cols > 0 ? cols : 1);
  return r > 0 ? r : 1;
}
#endif
