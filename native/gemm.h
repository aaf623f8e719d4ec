/* The addon's tiled float32 product (native/openblas-kernels.c) for its other kernels. */
#ifndef PRUNELAB_GEMM_H
#define PRUNELAB_GEMM_H
#include <stdint.h>

/* For each batch index i, C_i[m x n] = op(A_i) . op(B_i), row-major, every operand at an element
 * offset from `base` (strides in elements; 0 broadcasts): the `gemm` entry point's product, cut into
 * the same tiles, so the same values as TensorFlow.js's BatchMatMul on the addon. */
void prunelab_gemm(float *base, int64_t batch, int64_t m, int64_t n, int64_t k, int64_t aOff, int64_t aStride, int transA,
  int64_t bOff, int64_t bStride, int transB, int64_t cOff);
/* Whether prunelab_gemm sends a product of this size to the pool (else it runs in the calling thread). */
int prunelab_gemm_pools(int64_t batch, int64_t m, int64_t n, int64_t k);
#endif
