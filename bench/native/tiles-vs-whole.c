/*
 * What cutting a product into tiles costs, and whether it changes the result, on this machine's
 * OpenBLAS (one thread): the question behind native/openblas-kernels.c's tiles, which are fixed by
 * the shape alone so that results cannot depend on the thread count.
 *
 *   cc -O2 bench/native/tiles-vs-whole.c -lopenblas -o /tmp/tiles-vs-whole
 *   /tmp/tiles-vs-whole speed M K N TM TN   # GFLOP/s of C[M,N] = A[M,K]·B[K,N]: whole, and in TM × TN tiles
 *   /tmp/tiles-vs-whole bits                # whole vs tiled products, bit for bit, over a grid of shapes
 *   perf record /tmp/tiles-vs-whole repeat M K TM TN plain|symmetric
 *                                           # 100 products A[M,K]·S[K,K] in TM × TN tiles, S symmetric,
 *                                           # passed as it is or as Sᵀ (hostGemm's transB 2): compare
 *                                           # the shares of sgemm_itcopy / sgemm_incopy (packing S)
 *
 * Speed: best of 5 repeats of ~12 products each; the host's speed drifts, so run the two forms
 * several times, alternating. Bits: sides 64–2048 (stories260K's 172 among them), tiles of
 * 64–512 rows and columns; prints each shape and tiling whose entries differ from the whole call.
 */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

static float *randoms(long n) {
  float *x = malloc(4 * n);
  for (long i = 0; i < n; i++) x[i] = (float)(drand48() - 0.5);
  return x;
}

/* C = A·B, row-major, one cblas_sgemm per tm × tn tile of C; `transposed`: B (square, symmetric)
 * read as Bᵀ. */
static void tiled_as(int m, int k, int n, int tm, int tn, const float *a, const float *b, float *c, int transposed) {
  for (int i0 = 0; i0 < m; i0 += tm)
    for (int j0 = 0; j0 < n; j0 += tn) {
      const int mi = m - i0 < tm ? m - i0 : tm, nj = n - j0 < tn ? n - j0 : tn;
      cblas_sgemm(CblasRowMajor, CblasNoTrans, transposed ? CblasTrans : CblasNoTrans, mi, nj, k, 1.f, a + (long)i0 * k, k,
                  transposed ? b + (long)j0 * n : b + j0, n, 0.f, c + (long)i0 * n + j0, n);
    }
}

static void tiled(int m, int k, int n, int tm, int tn, const float *a, const float *b, float *c) {
  tiled_as(m, k, n, tm, tn, a, b, c, 0);
}

static double rate(int m, int k, int n, int tm, int tn, const float *a, const float *b, float *c) {
  const int reps = 12;
  double best = 1e30;
  for (int r = 0; r < 5; r++) {
    const double t0 = now();
    for (int q = 0; q < reps; q++) tiled(m, k, n, tm, tn, a, b, c);
    const double t = (now() - t0) / reps;
    if (t < best) best = t;
  }
  return 2.0 * m * n * k / best / 1e9;
}

int main(int argc, char **argv) {
  openblas_set_num_threads(1);
  if (argc == 7 && !strcmp(argv[1], "speed")) {
    const int m = atoi(argv[2]), k = atoi(argv[3]), n = atoi(argv[4]), tm = atoi(argv[5]), tn = atoi(argv[6]);
    float *a = randoms((long)m * k), *b = randoms((long)k * n), *c = malloc(4L * m * n);
    for (int round = 0; round < 3; round++)
      printf("%dx%dx%d: whole %.1f GFLOP/s, tiles %dx%d %.1f GFLOP/s\n", m, k, n, rate(m, k, n, m, n, a, b, c), tm, tn,
             rate(m, k, n, tm, tn, a, b, c));
    return 0;
  }
  if (argc == 2 && !strcmp(argv[1], "bits")) {
    const int dims[] = {64, 128, 172, 256, 384, 512, 576, 704, 768, 1024, 1408, 1536, 2048}, sides[] = {64, 128, 256, 512};
    const int nd = sizeof dims / sizeof *dims;
    int differ = 0, total = 0;
    for (int x = 0; x < nd; x++)
      for (int y = 0; y < nd; y++)
        for (int z = 0; z < nd; z++) {
          const int m = dims[x], k = dims[y], n = dims[z];
          if ((double)m * k * n > 3e9) continue;
          float *a = randoms((long)m * k), *b = randoms((long)k * n), *c = malloc(4L * m * n), *d = malloc(4L * m * n);
          tiled(m, k, n, m, n, a, b, c);
          for (int p = 0; p < 4; p++)
            for (int q = 0; q < 4; q++) {
              if (sides[p] >= m && sides[q] >= n) continue;
              total++;
              tiled(m, k, n, sides[p], sides[q], a, b, d);
              if (memcmp(c, d, 4L * m * n)) {
                differ++;
                printf("differs: %dx%dx%d in %dx%d tiles\n", m, k, n, sides[p], sides[q]);
                fflush(stdout);
              }
            }
          free(a), free(b), free(c), free(d);
        }
    printf("%d of %d tilings differ from the whole product\n", differ, total);
    return 0;
  }
  if (argc == 7 && !strcmp(argv[1], "repeat")) {
    const int m = atoi(argv[2]), k = atoi(argv[3]), tm = atoi(argv[4]), tn = atoi(argv[5]), transposed = !strcmp(argv[6], "symmetric");
    float *a = randoms((long)m * k), *s = malloc(4L * k * k), *c = malloc(4L * m * k);
    for (int i = 0; i < k; i++)
      for (int j = 0; j <= i; j++) s[i * k + j] = s[j * k + i] = (float)(drand48() - 0.5);
    for (int q = 0; q < 100; q++) tiled_as(m, k, k, tm, tn, a, s, c, transposed);
    return 0;
  }
  fprintf(stderr, "usage: tiles-vs-whole speed M K N TM TN | bits | repeat M K TM TN plain|symmetric\n");
  return 2;
}
