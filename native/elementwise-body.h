/*
 * The loops of native/elementwise-kernels.c and what they inline, included there once per vector
 * width with EW_TARGET (a GCC target attribute) and EW(name) (the name with that width's suffix)
 * defined. Explicit clones rather than target_clones: GCC 12 left the exp loops of
 * target_clones's AVX2 and baseline clones unvectorised ("control flow in loop"); with a target
 * attribute it vectorises them.
 */

/* Below this e^x is under 2^-126 and is returned as 0 (as XNNPACK's exp does): a subnormal
 * result costs a microcode assist of ~100 cycles per instruction that makes one, and softmax's
 * masked entries (-1e9) would make one per vector. e^-87.33 is 0.6% above 2^-126. */
#ifndef EXP_FLUSH_BELOW
#define EXP_FLUSH_BELOW -87.33f
#endif

/* e^x in float32: x = n ln2 + r (ln2 split in two, Cody-Waite), e^r by Cephes expf's polynomial,
 * 2^n as two exact power-of-two factors (n reaches 128 before the overflow to inf). */
EW_TARGET static inline float EW(exp_f)(float x0) {
  float x = x0 < EXP_FLUSH_BELOW ? EXP_FLUSH_BELOW : x0;
  x = x > 88.8f ? 88.8f : x; /* e^88.8 overflows to inf */
  const float shift = 12582912.0f; /* 1.5 * 2^23: adding it rounds to an integer */
  const float nf = (x * 1.44269504088896341f + shift) - shift;
  const float r = (x - nf * 0.693359375f) - nf * -2.12194440e-4f;
  const float z = r * r;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * z + r + 1.0f;
  const int32_t n = (int32_t)nf, n1 = n >> 1, n2 = n - n1;
  const uint32_t b1 = (uint32_t)(n1 + 127) << 23, b2 = (uint32_t)(n2 + 127) << 23;
  float s1, s2;
  memcpy(&s1, &b1, 4);
  memcpy(&s2, &b2, 4);
  const float e = (p * s1) * s2;
  return x0 < EXP_FLUSH_BELOW ? 0.0f : e;
}

/* 1 / (1 + e^-x), from e = e^-|x| so that neither side overflows: 1/(1+e) or e/(1+e). */
EW_TARGET static inline float EW(sigmoid_f)(float x) {
  const float e = EW(exp_f)(x < 0 ? x : -x);
  return (x >= 0 ? 1.0f : e) / (1.0f + e);
}

/* x[0..n) (or, with sq, each x[j] * x[j] rounded to float32 first: the Square kernel's values)
 * summed in 16 float64 partial sums (element j into sum j mod 16), those halved pairwise: a fixed
 * order (the same bits for any thread count or vector width), and accurate to about one rounding
 * for any row length. sq is a constant at each call site. */
EW_TARGET static inline __attribute__((always_inline)) double EW(sum16_of)(const float *restrict x, int64_t n, int sq) {
  v4d acc[4] = {{0}}; /* lanes 0-3, 4-7, 8-11, 12-15 */
  int64_t j = 0;
  for (; j + LANES <= n; j += LANES)
    for (int q = 0; q < 4; q++) {
      v4f a;
      memcpy(&a, x + j + 4 * q, sizeof a);
      if (sq) a = a * a;
      acc[q] += __builtin_convertvector(a, v4d);
    }
  for (int l = 0; j < n; j++, l++) acc[l / 4][l % 4] += (double)(sq ? x[j] * x[j] : x[j]);
  acc[0] += acc[2]; /* lane l += lane l + 8, then l + 4, 2, 1 */
  acc[1] += acc[3];
  acc[0] += acc[1];
  return (acc[0][0] + acc[0][2]) + (acc[0][1] + acc[0][3]);
}

EW_TARGET static inline double EW(sum16)(const float *restrict x, int64_t n) { return EW(sum16_of)(x, n, 0); }

/* The largest of x[0..n) (n >= 1), by 16 running maxima; a NaN may be skipped here, but it makes
 * its row's softmax NaN anyway (through e^(NaN - m) in the sum). */
EW_TARGET static inline float EW(max16)(const float *restrict x, int64_t n) {
  const float x0 = x[0];
  v8f acc[2] = {{x0, x0, x0, x0, x0, x0, x0, x0}, {x0, x0, x0, x0, x0, x0, x0, x0}};
  int64_t j = 0;
  for (; j + LANES <= n; j += LANES)
    for (int q = 0; q < 2; q++) {
      v8f v;
      memcpy(&v, x + j + 8 * q, sizeof v);
      const v8i gt = v > acc[q];
      acc[q] = (v8f)(((v8i)v & gt) | ((v8i)acc[q] & ~gt));
    }
  float m = x[0];
  for (int l = 0; l < LANES; l++) m = acc[l / 8][l % 8] > m ? acc[l / 8][l % 8] : m;
  for (; j < n; j++) m = x[j] > m ? x[j] : m;
  return m;
}

EW_TARGET static void EW(binary_range)(const Binary *k, int64_t i0, int64_t i1) {
  const float *restrict a = k->a, *restrict b = k->b;
  float *restrict o = k->out;
  const int op = k->op;
  if (op == OP_SILU_MUL) { /* SiLU(a) * b: the Sigmoid kernel's value, then Multiply, then Multiply */
    for (int64_t i = i0; i < i1; i++) {
      const float act = a[i] * EW(sigmoid_f)(a[i]);
      o[i] = act * b[i];
    }
    return;
  }
  if (k->mode == B_SAME || k->mode == B_SCALAR) {
    const int64_t bs = k->mode == B_SAME; /* b's stride: 1, or 0 for a scalar */
    const float s = b[0];
    if (op == OP_ADD) { if (bs) for (int64_t i = i0; i < i1; i++) o[i] = a[i] + b[i]; else for (int64_t i = i0; i < i1; i++) o[i] = a[i] + s; }
    else if (op == OP_SUB) { if (bs) for (int64_t i = i0; i < i1; i++) o[i] = a[i] - b[i]; else for (int64_t i = i0; i < i1; i++) o[i] = a[i] - s; }
    else if (op == OP_RSUB) { if (bs) for (int64_t i = i0; i < i1; i++) o[i] = b[i] - a[i]; else for (int64_t i = i0; i < i1; i++) o[i] = s - a[i]; }
    else { if (bs) for (int64_t i = i0; i < i1; i++) o[i] = a[i] * b[i]; else for (int64_t i = i0; i < i1; i++) o[i] = a[i] * s; }
    return;
  }
  /* TILE and COLUMN: [i0, i1) are whole rows of `inner`; a row pairs with b (TILE) or b[row] (COLUMN). */
  const int64_t w = k->inner;
  for (int64_t r0 = i0; r0 < i1; r0 += w) {
    const float *restrict ar = a + r0;
    float *restrict orow = o + r0;
    if (k->mode == B_TILE) {
      if (op == OP_ADD) for (int64_t j = 0; j < w; j++) orow[j] = ar[j] + b[j];
      else if (op == OP_SUB) for (int64_t j = 0; j < w; j++) orow[j] = ar[j] - b[j];
      else if (op == OP_RSUB) for (int64_t j = 0; j < w; j++) orow[j] = b[j] - ar[j];
      else for (int64_t j = 0; j < w; j++) orow[j] = ar[j] * b[j];
    } else {
      const float s = b[r0 / w];
      if (op == OP_ADD) for (int64_t j = 0; j < w; j++) orow[j] = ar[j] + s;
      else if (op == OP_SUB) for (int64_t j = 0; j < w; j++) orow[j] = ar[j] - s;
      else if (op == OP_RSUB) for (int64_t j = 0; j < w; j++) orow[j] = s - ar[j];
      else for (int64_t j = 0; j < w; j++) orow[j] = ar[j] * s;
    }
  }
}

EW_TARGET static void EW(unary_range)(const Unary *k, int64_t i0, int64_t i1) {
  const float *restrict x = k->x;
  float *restrict o = k->out;
  switch (k->op) {
    case U_SQUARE: for (int64_t i = i0; i < i1; i++) o[i] = x[i] * x[i]; break;
    case U_RSQRT: for (int64_t i = i0; i < i1; i++) o[i] = 1.0f / sqrtf(x[i]); break;
    case U_SIGMOID: for (int64_t i = i0; i < i1; i++) o[i] = EW(sigmoid_f)(x[i]); break;
    default: for (int64_t i = i0; i < i1; i++) o[i] = EW(exp_f)(x[i]); break;
  }
}

EW_TARGET static void EW(rows_range)(const Rows *k, int64_t r0, int64_t r1) {
  const int64_t c = k->cols;
  for (int64_t r = r0; r < r1; r++) {
    const float *restrict x = k->x + r * c;
    if (k->op == R_MEAN) {
      k->out[r] = (float)(EW(sum16)(x, c) / (double)c); /* one rounding */
      continue;
    }
    if (k->op == R_RMSNORM) { /* mean of squares as Square + Mean, + eps, rsqrt as Rsqrt, then x * rs * w */
      const float ms = (float)(EW(sum16_of)(x, c, 1) / (double)c);
      const float rs = 1.0f / sqrtf(ms + k->eps);
      float *restrict o = k->out + r * c;
      const float *restrict w = k->w;
      for (int64_t j = 0; j < c; j++) o[j] = (x[j] * rs) * w[j];
      continue;
    }
    float *restrict o = k->out + r * c;
    if (k->mask) { /* scores + mask as the Add kernel rounds them, then their softmax in place */
      const float *restrict mr = k->mask + (r % k->maskRows) * c;
      for (int64_t j = 0; j < c; j++) o[j] = x[j] + mr[j];
      const float m = EW(max16)(o, c);
      for (int64_t j = 0; j < c; j++) o[j] = EW(exp_f)(o[j] - m);
    } else {
      const float m = EW(max16)(x, c);
      for (int64_t j = 0; j < c; j++) o[j] = EW(exp_f)(x[j] - m);
    }
    /* By the reciprocal (rounded once from float64): a division per entry took a sixth of the time. */
    const float inv = (float)(1.0 / EW(sum16)(o, c));
    for (int64_t j = 0; j < c; j++) o[j] = o[j] * inv;
  }
}

/* Rows [r0, r1) of RoPE (native/elementwise-kernels.c `rope`): each output is fl(fl(x * c) + fl(y * s)),
 * y the dim's partner, as the composed ops make it (built with -ffp-contract=off: no fused multiply-add). */
EW_TARGET static void EW(rope_range)(const Rope *k, int64_t r0, int64_t r1) {
  const int64_t w = k->width, sp = k->span;
  for (int64_t r = r0; r < r1; r++) {
    const float *restrict x = k->x + r * w;
    const float *restrict c = k->cos + (r % k->T) * w, *restrict s = k->sin + (r % k->T) * w;
    float *restrict o = k->out + r * w;
    if (sp == 1) {
      for (int64_t j = 0; j < w; j += 2) {
        const float a = x[j], b = x[j + 1];
        o[j] = a * c[j] + b * s[j];
        o[j + 1] = b * c[j + 1] + a * s[j + 1];
      }
      continue;
    }
    for (int64_t b0 = 0; b0 < w; b0 += 2 * sp) {
      const float *restrict xa = x + b0, *restrict xb = x + b0 + sp;
      for (int64_t i = 0; i < sp; i++) o[b0 + i] = xa[i] * c[b0 + i] + xb[i] * s[b0 + i];
      for (int64_t i = 0; i < sp; i++) o[b0 + sp + i] = xb[i] * c[b0 + sp + i] + xa[i] * s[b0 + sp + i];
    }
  }
}
