/*
 * bert-wasm compute kernels: freestanding C for wasm32 + SIMD128 (and relaxed SIMD when built with
 * -mrelaxed-simd -DBERT_RELAXED). No libc, no allocator: every buffer is a pointer into linear memory
 * that the TypeScript side lays out (src/engine/backends/bert-wasm/session.ts). Only the numeric
 * kernels live here; the layer loop, heads and memory plan are TypeScript.
 *
 * Quantized GEMM contract (both builds produce bit-identical results):
 *   activations a: uint8, M rows of kp, 7-bit asymmetric per row: q = clamp(round(x / s) + z, 0, 127)
 *                  with s = (max - min) / 127 over the row (range widened to contain 0), z = round(-min / s);
 *                  in groups of 4 rows (A8_OFFSET; M rounded up to 4 in the buffer): one 16-byte load
 *                  holds 4 consecutive k of the group's 4 rows
 *   weights     w: int8 -127..127, N rows (output channels) of kp, in panels of 8 rows (N padded to a
 *                  multiple of 8 with zero rows): element (n, k) is at Q8_OFFSET(n, k, kp), so that
 *                  one 16-byte load holds 4 consecutive k of 4 consecutive rows; per-row scale ws[n],
 *                  wsum[n] = sum_k w[n][k] (ws, wsum and bias padded to the panel too)
 *   out[m][n] = (sum_k w[n][k] * a[m][k] - z[m] * wsum[n]) * s[m] * ws[n] + bias[n] (+ res[m][n])
 * The relaxed build computes the integer dot with i16x8.relaxed_dot_i8x16_i7x16_s (second operand
 * 0..127) followed by i32x4.extadd_pairwise_i16x8_s; the SIMD128 build sign/zero-extends
 * and uses i32x4.dot_i16x8_s. Integer sums are exact, so the two agree bit for bit.
 */
#include <stdint.h>
#include <wasm_simd128.h>

#define EXPORT(name) __attribute__((export_name(#name)))
/* Byte offset of activation (r, k) in quantize_rows' output. */
#define A8_OFFSET(r, k, kp) (((long)(r) >> 2) * 4 * (kp) + ((k) >> 2) * 16 + ((r) & 3) * 4 + ((k) & 3))
/* Byte offset of int8 weight (n, k) in the panel layout (format.ts q8Offset is the same). */
#define Q8_OFFSET(n, k, kp) (((long)(n) >> 3) * 8 * (kp) + ((k) >> 2) * 32 + (((n) & 7) >> 2) * 16 + ((n) & 3) * 4 + ((k) & 3))
#define INLINE static inline __attribute__((always_inline))

/* ------------------------------------------------------------------------------------------ */
/* Vector math                                                                                */
/* ------------------------------------------------------------------------------------------ */

#define ROUND_MAGIC 12582912.0f /* 1.5 * 2^23: adding it rounds to nearest (ties to even) */
#define ROUND_MAGIC_BITS 0x4B400000

INLINE float hsum_f32(v128_t v) {
  return wasm_f32x4_extract_lane(v, 0) + wasm_f32x4_extract_lane(v, 1) + wasm_f32x4_extract_lane(v, 2) +
         wasm_f32x4_extract_lane(v, 3);
}

INLINE int32_t hsum_i32(v128_t v) {
  v = wasm_i32x4_add(v, wasm_i32x4_shuffle(v, v, 2, 3, 0, 1));
  v = wasm_i32x4_add(v, wasm_i32x4_shuffle(v, v, 1, 0, 3, 2));
  return wasm_i32x4_extract_lane(v, 0);
}

INLINE float hmax_f32(v128_t v) {
  v = wasm_f32x4_pmax(v, wasm_i32x4_shuffle(v, v, 2, 3, 0, 1));
  v = wasm_f32x4_pmax(v, wasm_i32x4_shuffle(v, v, 1, 0, 3, 2));
  return wasm_f32x4_extract_lane(v, 0);
}

/* exp(x), cephes-style: x = n ln2 + r, |r| <= ln2/2, degree-6 polynomial; ~1 ulp. */
INLINE v128_t exp_f32x4(v128_t x) {
  x = wasm_f32x4_pmin(wasm_f32x4_splat(88.3762626647949f), x);
  x = wasm_f32x4_pmax(wasm_f32x4_splat(-87.3365478515625f), x);
  v128_t t = wasm_f32x4_add(wasm_f32x4_mul(x, wasm_f32x4_splat(1.44269504088896341f)), wasm_f32x4_splat(ROUND_MAGIC));
  v128_t n = wasm_f32x4_sub(t, wasm_f32x4_splat(ROUND_MAGIC));
  v128_t ni = wasm_i32x4_sub(t, wasm_i32x4_splat(ROUND_MAGIC_BITS));
  v128_t r = wasm_f32x4_sub(x, wasm_f32x4_mul(n, wasm_f32x4_splat(0.693359375f)));
  r = wasm_f32x4_sub(r, wasm_f32x4_mul(n, wasm_f32x4_splat(-2.12194440e-4f)));
  v128_t p = wasm_f32x4_splat(1.9875691500E-4f);
  p = wasm_f32x4_add(wasm_f32x4_mul(p, r), wasm_f32x4_splat(1.3981999507E-3f));
  p = wasm_f32x4_add(wasm_f32x4_mul(p, r), wasm_f32x4_splat(8.3334519073E-3f));
  p = wasm_f32x4_add(wasm_f32x4_mul(p, r), wasm_f32x4_splat(4.1665795894E-2f));
  p = wasm_f32x4_add(wasm_f32x4_mul(p, r), wasm_f32x4_splat(1.6666665459E-1f));
  p = wasm_f32x4_add(wasm_f32x4_mul(p, r), wasm_f32x4_splat(5.0000001201E-1f));
  p = wasm_f32x4_add(wasm_f32x4_mul(wasm_f32x4_mul(p, r), r), wasm_f32x4_add(r, wasm_f32x4_splat(1.0f)));
  v128_t pow2n = wasm_i32x4_shl(wasm_i32x4_add(ni, wasm_i32x4_splat(127)), 23);
  return wasm_f32x4_mul(p, pow2n);
}

/* 2^x for x <= 0 (softmax): x = n + f, |f| <= 1/2, degree-5 Taylor of 2^f (relative error < 3e-6,
   far below the 15-bit probabilities it feeds); 2^x underflows to ~1e-38 below -126. */
INLINE v128_t exp2_neg_f32x4(v128_t x) {
  x = wasm_f32x4_pmax(wasm_f32x4_splat(-126.0f), x);
  v128_t t = wasm_f32x4_add(x, wasm_f32x4_splat(ROUND_MAGIC));
  v128_t f = wasm_f32x4_sub(x, wasm_f32x4_sub(t, wasm_f32x4_splat(ROUND_MAGIC)));
  v128_t p = wasm_f32x4_splat(1.3333558e-3f);
  p = wasm_f32x4_add(wasm_f32x4_mul(p, f), wasm_f32x4_splat(9.6181291e-3f));
  p = wasm_f32x4_add(wasm_f32x4_mul(p, f), wasm_f32x4_splat(5.5504109e-2f));
  p = wasm_f32x4_add(wasm_f32x4_mul(p, f), wasm_f32x4_splat(2.4022651e-1f));
  p = wasm_f32x4_add(wasm_f32x4_mul(p, f), wasm_f32x4_splat(6.9314718e-1f));
  p = wasm_f32x4_add(wasm_f32x4_mul(p, f), wasm_f32x4_splat(1.0f));
  v128_t pow2n = wasm_i32x4_shl(wasm_i32x4_add(wasm_i32x4_sub(t, wasm_i32x4_splat(ROUND_MAGIC_BITS)), wasm_i32x4_splat(127)), 23);
  return wasm_f32x4_mul(p, pow2n);
}

/* erf(x) as x P(x^2) / Q(x^2) on x clamped to [-4, 4] (beyond, erf is +-1 in f32): the rational
   approximation Eigen and XLA use for float erf (|error| < 4e-7 against a double reference), with no
   exp and one division: twice as fast as A&S 7.1.26 + exp, which made GELU a tenth of the run. */
INLINE v128_t erf_f32x4(v128_t x) {
  x = wasm_f32x4_pmax(wasm_f32x4_splat(-4.0f), wasm_f32x4_pmin(x, wasm_f32x4_splat(4.0f)));
  v128_t x2 = wasm_f32x4_mul(x, x);
#define HORNER(acc, c) wasm_f32x4_add(wasm_f32x4_mul(x2, acc), wasm_f32x4_splat(c))
  v128_t p = HORNER(wasm_f32x4_splat(-2.72614225801306e-10f), 2.77068142495902e-08f);
  p = HORNER(p, -2.10102402082508e-06f);
  p = HORNER(p, -5.69250639462346e-05f);
  p = HORNER(p, -7.34990630326855e-04f);
  p = HORNER(p, -2.95459980854025e-03f);
  p = HORNER(p, -1.60960333262415e-02f);
  v128_t q = HORNER(wasm_f32x4_splat(-1.45660718464996e-05f), -2.13374055278905e-04f);
  q = HORNER(q, -1.68282697438203e-03f);
  q = HORNER(q, -7.37332916720468e-03f);
  q = HORNER(q, -1.42647390514189e-02f);
#undef HORNER
  return wasm_f32x4_div(wasm_f32x4_mul(x, p), q);
}

INLINE v128_t gelu_f32x4(v128_t x) {
  v128_t e = erf_f32x4(wasm_f32x4_mul(x, wasm_f32x4_splat(0.70710678118654752f)));
  return wasm_f32x4_mul(wasm_f32x4_mul(x, wasm_f32x4_splat(0.5f)), wasm_f32x4_add(e, wasm_f32x4_splat(1.0f)));
}

/* tanh(x) = sign(x) (1 - e) / (1 + e), e = exp(-2|x|) */
INLINE v128_t tanh_f32x4(v128_t x) {
  v128_t sign = wasm_v128_and(x, wasm_i32x4_splat((int32_t)0x80000000));
  v128_t e = exp_f32x4(wasm_f32x4_mul(wasm_f32x4_abs(x), wasm_f32x4_splat(-2.0f)));
  v128_t y = wasm_f32x4_div(wasm_f32x4_sub(wasm_f32x4_splat(1.0f), e), wasm_f32x4_add(wasm_f32x4_splat(1.0f), e));
  return wasm_v128_or(y, sign);
}

enum { ACT_NONE = 0, ACT_GELU = 1, ACT_TANH = 2, ACT_RELU = 3 };

INLINE v128_t act_f32x4(v128_t x, int act) {
  switch (act) {
    case ACT_GELU: return gelu_f32x4(x);
    case ACT_TANH: return tanh_f32x4(x);
    case ACT_RELU: return wasm_f32x4_pmax(wasm_f32x4_splat(0.0f), x);
    default: return x;
  }
}

INLINE float act_f32(float x, int act) {
  if (act == ACT_NONE) return x;
  return wasm_f32x4_extract_lane(act_f32x4(wasm_f32x4_splat(x), act), 0);
}

/** In place: x[i] = act(x[i]) for n floats. */
EXPORT(activate)
void activate(float* x, int n, int act) {
  int i = 0;
  for (; i + 4 <= n; i += 4) wasm_v128_store(x + i, act_f32x4(wasm_v128_load(x + i), act));
  for (; i < n; i++) x[i] = act_f32(x[i], act);
}

/* ------------------------------------------------------------------------------------------ */
/* Embeddings and LayerNorm                                                                   */
/* ------------------------------------------------------------------------------------------ */

/** out[r] += int8 row `r` of a panel-layout table (see Q8_OFFSET) * scale, h values: 4 k at a time, 32 bytes apart. */
INLINE void add_q8_row(float* out, const int8_t* table, int r, int kp, float s, int h) {
  const int8_t* row = table + Q8_OFFSET(r, 0, kp);
  v128_t vs = wasm_f32x4_splat(s);
  for (int i = 0; i < h; i += 4) { /* h is a multiple of 4 (the packer checks) */
    v128_t q = wasm_i32x4_extend_low_i16x8(wasm_i16x8_extend_low_i8x16(wasm_v128_load32_zero(row + (i >> 2) * 32)));
    wasm_v128_store(out + i, wasm_f32x4_add(wasm_v128_load(out + i), wasm_f32x4_mul(wasm_f32x4_convert_i32x4(q), vs)));
  }
}

/**
 * Sum of word + position (+ token type) embeddings for rows = batch * seq tokens. Positions restart at
 * 0 every `seq` tokens. Tables are int8 in the panel layout (row length kp) with per-row scales. `types` may be 0.
 */
EXPORT(embed)
void embed(const int32_t* ids, const int32_t* types, int rows, int seq, int h, int hp, const int8_t* word,
           const float* word_scale, const int8_t* pos, const float* pos_scale, const int8_t* type,
           const float* type_scale, float* out) {
  for (int r = 0; r < rows; r++) {
    float* o = out + (long)r * h;
    for (int i = 0; i < h; i++) o[i] = 0.0f;
    int id = ids[r];
    add_q8_row(o, word, id, hp, word_scale[id], h);
    if (type) {
      int t = types[r];
      add_q8_row(o, type, t, hp, type_scale[t], h);
    }
    int p = r % seq;
    add_q8_row(o, pos, p, hp, pos_scale[p], h);
  }
}

/** x[r] = LayerNorm(x[r]) * gamma + beta over h values, rows of stride h. Two-pass variance as torch. */
EXPORT(layernorm)
void layernorm(float* x, int rows, int h, const float* gamma, const float* beta, float eps) {
  for (int r = 0; r < rows; r++) {
    float* v = x + (long)r * h;
    v128_t acc = wasm_f32x4_splat(0.0f);
    int i = 0;
    for (; i + 4 <= h; i += 4) acc = wasm_f32x4_add(acc, wasm_v128_load(v + i));
    float sum = hsum_f32(acc);
    for (; i < h; i++) sum += v[i];
    float mean = sum / (float)h;
    v128_t vm = wasm_f32x4_splat(mean);
    acc = wasm_f32x4_splat(0.0f);
    for (i = 0; i + 4 <= h; i += 4) {
      v128_t d = wasm_f32x4_sub(wasm_v128_load(v + i), vm);
      acc = wasm_f32x4_add(acc, wasm_f32x4_mul(d, d));
    }
    float var = hsum_f32(acc);
    for (; i < h; i++) var += (v[i] - mean) * (v[i] - mean);
    var /= (float)h;
    float inv = 1.0f / __builtin_sqrtf(var + eps);
    v128_t vi = wasm_f32x4_splat(inv);
    for (i = 0; i + 4 <= h; i += 4) {
      v128_t d = wasm_f32x4_mul(wasm_f32x4_sub(wasm_v128_load(v + i), vm), vi);
      wasm_v128_store(v + i, wasm_f32x4_add(wasm_f32x4_mul(d, wasm_v128_load(gamma + i)), wasm_v128_load(beta + i)));
    }
    for (; i < h; i++) v[i] = (v[i] - mean) * inv * gamma[i] + beta[i];
  }
}

/* ------------------------------------------------------------------------------------------ */
/* Activation quantization (per row, 7-bit + offset 64)                                       */
/* ------------------------------------------------------------------------------------------ */

EXPORT(quantize_rows)
void quantize_rows(const float* x, int rows, int k, int xstride, uint8_t* q, int kp, float* scales, int32_t* zps) {
  for (int r = 0; r < rows; r++) {
    const float* xr = x + (long)r * xstride;
    uint8_t* qr = q + A8_OFFSET(r, 0, kp); /* k at qr + (k / 4) * 16 + k % 4 */
    /* range [lo, hi], always containing 0 */
    v128_t vlo = wasm_f32x4_splat(0.0f), vhi = wasm_f32x4_splat(0.0f);
    int i = 0;
    for (; i + 4 <= k; i += 4) {
      v128_t v = wasm_v128_load(xr + i);
      vlo = wasm_f32x4_pmin(vlo, v);
      vhi = wasm_f32x4_pmax(vhi, v);
    }
    float hi = hmax_f32(vhi);
    float lo = -hmax_f32(wasm_f32x4_neg(vlo));
    for (; i < k; i++) {
      hi = xr[i] > hi ? xr[i] : hi;
      lo = xr[i] < lo ? xr[i] : lo;
    }
    float range = hi - lo;
    float s = range > 0.0f ? range / 127.0f : 1.0f;
    float inv = range > 0.0f ? 127.0f / range : 0.0f;
    /* zero point: round(-lo / s) in 0..127, by the same rounding trick */
    int32_t zp = __builtin_bit_cast(int32_t, -lo * inv + ROUND_MAGIC) - ROUND_MAGIC_BITS;
    scales[r] = s;
    zps[r] = zp;
    v128_t vinv = wasm_f32x4_splat(inv);
    v128_t magic = wasm_f32x4_splat(ROUND_MAGIC);
    v128_t off = wasm_i32x4_splat(ROUND_MAGIC_BITS - zp);
    v128_t top = wasm_u8x16_splat(127);
#define QV(p) wasm_i32x4_sub(wasm_f32x4_add(wasm_f32x4_mul(wasm_v128_load(p), vinv), magic), off)
    for (i = 0; i + 16 <= k; i += 16) {
      v128_t a = wasm_i16x8_narrow_i32x4(QV(xr + i), QV(xr + i + 4));
      v128_t b = wasm_i16x8_narrow_i32x4(QV(xr + i + 8), QV(xr + i + 12));
      v128_t v = wasm_u8x16_min(wasm_u8x16_narrow_i16x8(a, b), top);
      uint8_t* o = qr + (i >> 2) * 16;
      wasm_v128_store32_lane(o, v, 0);
      wasm_v128_store32_lane(o + 16, v, 1);
      wasm_v128_store32_lane(o + 32, v, 2);
      wasm_v128_store32_lane(o + 48, v, 3);
    }
#undef QV
    for (; i < k; i++) {
      int32_t v = __builtin_bit_cast(int32_t, xr[i] * inv + ROUND_MAGIC) - (ROUND_MAGIC_BITS - zp);
      qr[(i >> 2) * 16 + (i & 3)] = (uint8_t)(v < 0 ? 0 : v > 127 ? 127 : v);
    }
    for (; i < kp; i++) qr[(i >> 2) * 16 + (i & 3)] = (uint8_t)zp;
  }
}

/* ------------------------------------------------------------------------------------------ */
/* Quantized GEMM                                                                             */
/* ------------------------------------------------------------------------------------------ */

/* acc[c] += sum_{t<4} w[4c + t] * a[4c + t]: four 4-element dots, one per i32 lane. */
INLINE v128_t dot4x4(v128_t w, v128_t a, v128_t acc) {
#ifdef BERT_RELAXED
  return wasm_i32x4_add(acc, wasm_i32x4_extadd_pairwise_i16x8(wasm_i16x8_relaxed_dot_i8x16_i7x16(w, a)));
#else
  v128_t lo = wasm_i32x4_dot_i16x8(wasm_i16x8_extend_low_i8x16(w), wasm_u16x8_extend_low_u8x16(a));
  v128_t hi = wasm_i32x4_dot_i16x8(wasm_i16x8_extend_high_i8x16(w), wasm_u16x8_extend_high_u8x16(a));
  return wasm_i32x4_add(acc, wasm_i32x4_add(wasm_i32x4_shuffle(lo, hi, 0, 2, 4, 6), wasm_i32x4_shuffle(lo, hi, 1, 3, 5, 7)));
#endif
}

#define MBLOCK 64

/* Epilogue of one row and 4 columns: y = act((acc - azp wsum) ascale wscale + bias (+ res)). */
INLINE v128_t gemm_epilogue(v128_t acc, int32_t azp, float ascale, v128_t ws, v128_t wsum, v128_t bias, const float* res, int act) {
  v128_t v = wasm_i32x4_sub(acc, wasm_i32x4_mul(wasm_i32x4_splat(azp), wsum));
  v128_t y = wasm_f32x4_add(wasm_f32x4_mul(wasm_f32x4_convert_i32x4(v), wasm_f32x4_mul(wasm_f32x4_splat(ascale), ws)), bias);
  if (res) y = wasm_f32x4_add(y, wasm_v128_load(res));
  return act_f32x4(y, act);
}

/**
 * out[m][n] = act((sum_k w[n][k] a[m][k] - azp[m] wsum[n]) ascale[m] wscale[n] + bias[n] (+ res[m][n])).
 * Tiles of 4 rows x 8 columns (one row group, one weight panel): per 4 k, three 16-byte loads (two of
 * weights, one of the 4 rows' activations, splat lane by lane) feed 8 accumulators whose lanes are
 * already per-column sums (no horizontal reduction), then a vector epilogue (activation fused). Few
 * loads matter where the engine bounds-checks each one (Deno, workerd). A last panel with fewer than 8 columns goes
 * through a small buffer. res may alias out (read before written).
 */
EXPORT(gemm_q8)
void gemm_q8(const uint8_t* a, const float* ascale, const int32_t* azp, int m, int kp, const int8_t* w, const float* wscale,
             const int32_t* wsum, const float* bias, int n, float* out, int ostride, const float* res, int act) {
  for (int m0 = 0; m0 < m; m0 += MBLOCK) {
    const int m1 = m0 + MBLOCK < m ? m0 + MBLOCK : m;
    for (int j = 0; j < n; j += 8) {
      const int8_t* panel = w + Q8_OFFSET(j, 0, kp);
      const int cols = n - j < 8 ? n - j : 8;
      const v128_t ws0 = wasm_v128_load(wscale + j), ws1 = wasm_v128_load(wscale + j + 4);
      const v128_t sum0 = wasm_v128_load(wsum + j), sum1 = wasm_v128_load(wsum + j + 4);
      const v128_t b0 = wasm_v128_load(bias + j), b1 = wasm_v128_load(bias + j + 4);
      for (int i = m0; i < m1; i += 4) {
        /* rows of the group past m1 (padding of the activation buffer): computed, never stored */
        const uint8_t* ap = a + A8_OFFSET(i, 0, kp);
        const uint8_t* end = ap + 4 * kp;
        v128_t c00 = wasm_i32x4_splat(0), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00, c31 = c00;
        const int8_t* wp = panel;
        for (; ap < end; ap += 16, wp += 32) {
          v128_t w0 = wasm_v128_load(wp), w1 = wasm_v128_load(wp + 16), rows4 = wasm_v128_load(ap);
          v128_t x = wasm_i32x4_shuffle(rows4, rows4, 0, 0, 0, 0);
          c00 = dot4x4(w0, x, c00);
          c01 = dot4x4(w1, x, c01);
          x = wasm_i32x4_shuffle(rows4, rows4, 1, 1, 1, 1);
          c10 = dot4x4(w0, x, c10);
          c11 = dot4x4(w1, x, c11);
          x = wasm_i32x4_shuffle(rows4, rows4, 2, 2, 2, 2);
          c20 = dot4x4(w0, x, c20);
          c21 = dot4x4(w1, x, c21);
          x = wasm_i32x4_shuffle(rows4, rows4, 3, 3, 3, 3);
          c30 = dot4x4(w0, x, c30);
          c31 = dot4x4(w1, x, c31);
        }
        const v128_t acc[8] = {c00, c01, c10, c11, c20, c21, c30, c31};
        for (int r = 0; r < 4 && i + r < m1; r++) {
          const long row = (long)(i + r) * ostride + j;
          float* o = out + row;
          const float* rr = res ? res + row : 0;
          float t[8]; /* a partial last panel goes through here, its residual included */
          if (cols < 8) {
            for (int c = 0; c < 8; c++) t[c] = rr && c < cols ? rr[c] : 0.0f;
            o = t;
            if (rr) rr = t;
          }
          wasm_v128_store(o, gemm_epilogue(acc[2 * r], azp[i + r], ascale[i + r], ws0, sum0, b0, rr, act));
          wasm_v128_store(o + 4, gemm_epilogue(acc[2 * r + 1], azp[i + r], ascale[i + r], ws1, sum1, b1, rr ? rr + 4 : 0, act));
          if (cols < 8)
            for (int c = 0; c < cols; c++) out[row + c] = t[c];
        }
      }
    }
  }
}

/* ------------------------------------------------------------------------------------------ */
/* fp32 linear (small heads) and attention                                                    */
/* ------------------------------------------------------------------------------------------ */

INLINE float dot_f32(const float* a, const float* b, int k) {
  v128_t acc = wasm_f32x4_splat(0.0f);
  int i = 0;
  for (; i + 4 <= k; i += 4) acc = wasm_f32x4_add(acc, wasm_f32x4_mul(wasm_v128_load(a + i), wasm_v128_load(b + i)));
  float s = hsum_f32(acc);
  for (; i < k; i++) s += a[i] * b[i];
  return s;
}

/** out[m][n] = act(sum_k x[m][k] w[n][k] + bias[n]); x rows of stride xstride, out rows of stride ostride. */
EXPORT(linear_f32)
void linear_f32(const float* x, int m, int k, int xstride, const float* w, const float* bias, int n, float* out,
                int ostride, int act) {
  for (int i = 0; i < m; i++) {
    float* o = out + (long)i * ostride;
    for (int j = 0; j < n; j++) o[j] = dot_f32(x + (long)i * xstride, w + (long)j * k, k) + bias[j];
    activate(o, n, act);
  }
}

/* ------------------------------------------------------------------------------------------ */
/* int8 attention                                                                             */
/* ------------------------------------------------------------------------------------------ */

/* [a0, a1, a2, a3] -> [sum a0, sum a1, sum a2, sum a3] */
INLINE v128_t reduce4_i32(v128_t a0, v128_t a1, v128_t a2, v128_t a3) {
  v128_t s01 = wasm_i32x4_add(wasm_i32x4_shuffle(a0, a1, 0, 2, 4, 6), wasm_i32x4_shuffle(a0, a1, 1, 3, 5, 7));
  v128_t s23 = wasm_i32x4_add(wasm_i32x4_shuffle(a2, a3, 0, 2, 4, 6), wasm_i32x4_shuffle(a2, a3, 1, 3, 5, 7));
  return wasm_i32x4_add(wasm_i32x4_shuffle(s01, s23, 0, 2, 4, 6), wasm_i32x4_shuffle(s01, s23, 1, 3, 5, 7));
}

/* Integer dots of 2 rows of a (i16, stride lda) with 4 rows of w (i16, stride ldw) over kp (multiple
 * of 8): r0[j] = sum_k a[0][k] w[j][k], r1[j] = sum_k a[1][k] w[j][k]. */
INLINE void mm16_2x4(const int16_t* a, int lda, const int16_t* w, int ldw, int kp, v128_t* r0, v128_t* r1) {
  v128_t c00 = wasm_i32x4_splat(0), c01 = c00, c02 = c00, c03 = c00, c10 = c00, c11 = c00, c12 = c00, c13 = c00;
  for (int k = 0; k < kp; k += 8) {
    v128_t a0 = wasm_v128_load(a + k), a1 = wasm_v128_load(a + lda + k);
    v128_t w0 = wasm_v128_load(w + k);
    c00 = wasm_i32x4_add(c00, wasm_i32x4_dot_i16x8(w0, a0));
    c10 = wasm_i32x4_add(c10, wasm_i32x4_dot_i16x8(w0, a1));
    v128_t w1 = wasm_v128_load(w + ldw + k);
    c01 = wasm_i32x4_add(c01, wasm_i32x4_dot_i16x8(w1, a0));
    c11 = wasm_i32x4_add(c11, wasm_i32x4_dot_i16x8(w1, a1));
    v128_t w2 = wasm_v128_load(w + 2 * ldw + k);
    c02 = wasm_i32x4_add(c02, wasm_i32x4_dot_i16x8(w2, a0));
    c12 = wasm_i32x4_add(c12, wasm_i32x4_dot_i16x8(w2, a1));
    v128_t w3 = wasm_v128_load(w + 3 * ldw + k);
    c03 = wasm_i32x4_add(c03, wasm_i32x4_dot_i16x8(w3, a0));
    c13 = wasm_i32x4_add(c13, wasm_i32x4_dot_i16x8(w3, a1));
  }
  *r0 = reduce4_i32(c00, c01, c02, c03);
  *r1 = reduce4_i32(c10, c11, c12, c13);
}

/* Symmetric 16-bit: q = round(x / s), s = max|x| / qmax, n values (stride xstride) into np (zero padded). */
INLINE float quantize_i16(const float* x, int xstride, int n, int np, int16_t* q, float qmax) {
  if (xstride == 1 && (n & 7) == 0) {
    v128_t vmx = wasm_f32x4_splat(0.0f);
    for (int i = 0; i < n; i += 4) vmx = wasm_f32x4_pmax(vmx, wasm_f32x4_abs(wasm_v128_load(x + i)));
    float mx = hmax_f32(vmx);
    v128_t inv = wasm_f32x4_splat(mx > 0.0f ? qmax / mx : 0.0f), magic = wasm_f32x4_splat(ROUND_MAGIC), bits = wasm_i32x4_splat(ROUND_MAGIC_BITS);
    for (int i = 0; i < n; i += 8) {
      v128_t a = wasm_i32x4_sub(wasm_f32x4_add(wasm_f32x4_mul(wasm_v128_load(x + i), inv), magic), bits);
      v128_t b = wasm_i32x4_sub(wasm_f32x4_add(wasm_f32x4_mul(wasm_v128_load(x + i + 4), inv), magic), bits);
      wasm_v128_store(q + i, wasm_i16x8_narrow_i32x4(a, b));
    }
    for (int i = n; i < np; i++) q[i] = 0;
    return mx / qmax;
  }
  float mx = 0.0f;
  for (int i = 0; i < n; i++) {
    float a = __builtin_fabsf(x[(long)i * xstride]);
    mx = a > mx ? a : mx;
  }
  float inv = mx > 0.0f ? qmax / mx : 0.0f;
  for (int i = 0; i < n; i++) q[i] = (int16_t)(__builtin_bit_cast(int32_t, x[(long)i * xstride] * inv + ROUND_MAGIC) - ROUND_MAGIC_BITS);
  for (int i = n; i < np; i++) q[i] = 0;
  return mx / qmax;
}

#define QBLOCK 48 /* query rows per block (even) */
#define VMAX 4095.0f   /* V: 13 bits */
#define PMAX 32767.0f  /* probabilities: up to 15 bits, and sum_j p_j <= PSUM so that sum_j p_j v_j fits in i32 */
#define PSUM 524000.0f

INLINE int round_up(int x, int m) { return (x + m - 1) / m * m; }

/** Scratch bytes that attention() needs for s tokens. */
EXPORT(attention_scratch)
int attention_scratch(int s, int h, int heads) {
  int hd = h / heads, hd8 = round_up(hd, 8), hd4 = round_up(hd, 4), s2 = round_up(s, 2), s4 = round_up(s, 4), sp = round_up(s, 8);
  return 2 * s2 * hd8 + 2 * s4 * hd8 + 4 * (s2 + s4) + 2 * hd4 * sp + 4 * 2 * hd4 + 4 * QBLOCK * sp + 2 * QBLOCK * sp + 4 * (2 * QBLOCK + sp + 4) + 256;
}

/**
 * Self-attention for one sequence of s tokens, on 16-bit integer dot products (i32x4.dot_i16x8_s:
 * twice the multiply rate of f32 SIMD, the same in both builds). qkv: [s][3h] (q | k | v), mask: [s]
 * (0 = padding key), ctx: [s][h], scratch: attention_scratch(s, h, heads) bytes, 16-byte aligned.
 * Only the first `queries` query rows (1..s) are computed (ctx rows beyond are left as they were):
 * a classifier's last layer needs just the first token's. Each row's result is the same either way.
 * Per head: Q and K per row (13 to 14 bits), V per channel (over the keys that can be attended to, 13
 * bits) symmetric;
 * scores f32 (1/sqrt(d) folded into Q's scale), softmax f32; the unnormalised probabilities
 * e = exp(x - max) in [0, 1] quantized as round(c e), c = min(32767, 524000 / sum e) (so PV fits
 * in i32), PV on the integer dot, divided by the sum of the quantized numerators. Masked keys get probability exactly 0 (HF adds finfo.min); a query with
 * every key masked attends uniformly to all keys, as HF's softmax does then. Nothing depends on the
 * padded length: padded keys add exact zeros, so padding a sequence does not change its bits.
 */
EXPORT(attention)
void attention(const float* qkv, int s, int h, int heads, const int32_t* mask, float* ctx, uint8_t* scratch, int queries) {
  const int hd = h / heads, hd8 = round_up(hd, 8), hd4 = round_up(hd, 4), s2 = round_up(s, 2), s4 = round_up(s, 4), sp = round_up(s, 8);
  const int nq = queries < s ? queries : s, nq2 = round_up(nq, 2);
  const int stride = 3 * h;
  int16_t* qq = (int16_t*)scratch;
  int16_t* kq = qq + s2 * hd8;
  float* qs = (float*)(kq + s4 * hd8);
  float* ks = qs + s2;
  int16_t* vt = (int16_t*)(ks + s4);
  float* vs = (float*)(vt + hd4 * sp);
  float* vinv = vs + hd4;
  float* scores = vinv + hd4;
  int16_t* pq = (int16_t*)(scores + QBLOCK * sp);
  float* pscale = (float*)(pq + QBLOCK * sp);
  float* rowmax = pscale + QBLOCK;
  int32_t* keep = (int32_t*)(rowmax + QBLOCK);
  /* scores are kept in base 2: 1/sqrt(d) * log2(e) is folded into Q's scale, softmax uses 2^x */
  const float scale = 1.4426950408889634f / __builtin_sqrtf((float)hd);
  /* Q, K: as many bits as keep sum_d q_d k_d in i32: qkmax^2 * hd8 < 2^31 */
  float qkmax = __builtin_floorf(46340.0f / __builtin_sqrtf((float)hd8));
  qkmax = qkmax > 16383.0f ? 16383.0f : qkmax;
  int any = 0;
  for (int j = 0; j < s; j++) any |= mask[j] != 0;
#define KEEP(j) (!any || mask[j])
  for (int j = 0; j < sp; j++) keep[j] = j < s && KEEP(j) ? -1 : 0;
  for (int hh = 0; hh < heads; hh++) {
    const float* q0 = qkv + hh * hd;
    const float* k0 = qkv + h + hh * hd;
    const float* v0 = qkv + 2 * h + hh * hd;
    for (int i = 0; i < nq2; i++) {
      if (i < nq) qs[i] = quantize_i16(q0 + (long)i * stride, 1, hd, hd8, qq + (long)i * hd8, qkmax) * scale;
      else {
        for (int d = 0; d < hd8; d++) qq[(long)i * hd8 + d] = 0;
        qs[i] = 0.0f;
      }
    }
    for (int j = 0; j < s4; j++) {
      if (j < s) ks[j] = quantize_i16(k0 + (long)j * stride, 1, hd, hd8, kq + (long)j * hd8, qkmax);
      else {
        for (int d = 0; d < hd8; d++) kq[(long)j * hd8 + d] = 0;
        ks[j] = 0.0f;
      }
    }
    /* V^T per channel over the keys that can be attended to; other keys zero */
    for (int d = 0; d < hd4; d++) vinv[d] = 0.0f;
    for (int j = 0; j < s; j++) {
      if (!KEEP(j)) continue;
      const float* vj = v0 + (long)j * stride;
      for (int d = 0; d < hd; d++) {
        float a = __builtin_fabsf(vj[d]);
        vinv[d] = a > vinv[d] ? a : vinv[d];
      }
    }
    for (int d = 0; d < hd4; d++) {
      float m = vinv[d];
      vs[d] = m / VMAX;
      vinv[d] = m > 0.0f ? VMAX / m : 0.0f;
    }
    for (int d = hd; d < hd4; d++)
      for (int j = 0; j < sp; j++) vt[(long)d * sp + j] = 0;
    for (int j = 0; j < sp; j++) {
      if (j >= s || !KEEP(j)) {
        for (int d = 0; d < hd; d++) vt[(long)d * sp + j] = 0;
        continue;
      }
      const float* vj = v0 + (long)j * stride;
      for (int d = 0; d < hd; d++) vt[(long)d * sp + j] = (int16_t)(__builtin_bit_cast(int32_t, vj[d] * vinv[d] + ROUND_MAGIC) - ROUND_MAGIC_BITS);
    }
    for (int i0 = 0; i0 < nq; i0 += QBLOCK) {
      const int rows = nq - i0 < QBLOCK ? nq - i0 : QBLOCK;
      const int rows2 = round_up(rows, 2);
      /* scores = Q K^T (scaled, base 2), 2 queries x 4 keys at a time; masked keys -3e38; row maxima */
      const v128_t neg = wasm_f32x4_splat(-3.0e38f);
      for (int i = 0; i < rows2; i += 2) {
        const int16_t* a = qq + (long)(i0 + i) * hd8;
        v128_t sa0 = wasm_f32x4_splat(qs[i0 + i]), sa1 = wasm_f32x4_splat(qs[i0 + i + 1]);
        float* o0 = scores + (long)i * sp;
        float* o1 = o0 + sp;
        v128_t m0 = neg, m1 = neg;
        for (int j = 0; j < s4; j += 4) {
          v128_t r0, r1;
          mm16_2x4(a, hd8, kq + (long)j * hd8, hd8, hd8, &r0, &r1);
          v128_t kscale = wasm_v128_load(ks + j), kv = wasm_v128_load(keep + j);
          v128_t x0 = wasm_v128_bitselect(wasm_f32x4_mul(wasm_f32x4_convert_i32x4(r0), wasm_f32x4_mul(sa0, kscale)), neg, kv);
          v128_t x1 = wasm_v128_bitselect(wasm_f32x4_mul(wasm_f32x4_convert_i32x4(r1), wasm_f32x4_mul(sa1, kscale)), neg, kv);
          if (!any) x0 = x1 = wasm_f32x4_splat(0.0f); /* every key masked: uniform, as HF */
          m0 = wasm_f32x4_pmax(m0, x0);
          m1 = wasm_f32x4_pmax(m1, x1);
          wasm_v128_store(o0 + j, x0);
          wasm_v128_store(o1 + j, x1);
        }
        for (int j = s4; j < sp; j++) o0[j] = o1[j] = -3.0e38f;
        if (!any)
          for (int j = s; j < s4; j++) o0[j] = o1[j] = -3.0e38f;
        rowmax[i] = hmax_f32(m0);
        rowmax[i + 1] = hmax_f32(m1);
      }
      /* softmax numerators e = 2^(x - max) in [0, 1] (zero for masked keys and beyond s), then
         quantized as round(c e) with c = min(PMAX, PSUM / sum e) */
      for (int i = 0; i < rows2; i++) {
        float* sc = scores + (long)i * sp;
        int16_t* p = pq + (long)i * sp;
        if (i >= rows) {
          for (int j = 0; j < sp; j++) p[j] = 0;
          pscale[i] = 0.0f;
          continue;
        }
        v128_t vm = wasm_f32x4_splat(rowmax[i]), esum = wasm_f32x4_splat(0.0f), floor = wasm_f32x4_splat(-1.0e38f);
        for (int j = 0; j < sp; j += 4) {
          v128_t x = wasm_v128_load(sc + j);
          v128_t e = wasm_v128_and(exp2_neg_f32x4(wasm_f32x4_sub(x, vm)), wasm_f32x4_gt(x, floor));
          esum = wasm_f32x4_add(esum, e);
          wasm_v128_store(sc + j, e);
        }
        float c = PSUM / hsum_f32(esum);
        c = c > PMAX ? PMAX : c;
        v128_t vc = wasm_f32x4_splat(c), magic = wasm_f32x4_splat(ROUND_MAGIC), bits = wasm_i32x4_splat(ROUND_MAGIC_BITS);
        v128_t sum = wasm_i32x4_splat(0);
        for (int j = 0; j < sp; j += 8) {
          v128_t q0 = wasm_i32x4_sub(wasm_f32x4_add(wasm_f32x4_mul(wasm_v128_load(sc + j), vc), magic), bits);
          v128_t q1 = wasm_i32x4_sub(wasm_f32x4_add(wasm_f32x4_mul(wasm_v128_load(sc + j + 4), vc), magic), bits);
          sum = wasm_i32x4_add(sum, wasm_i32x4_add(q0, q1));
          wasm_v128_store(p + j, wasm_i16x8_narrow_i32x4(q0, q1));
        }
        /* divide by the sum of the quantized numerators (an exact integer) */
        pscale[i] = 1.0f / (float)hsum_i32(sum);
      }
      /* ctx = P V, 2 queries x 4 channels at a time */
      for (int i = 0; i < rows2; i += 2) {
        const int16_t* a = pq + (long)i * sp;
        v128_t s0 = wasm_f32x4_splat(pscale[i]), s1 = wasm_f32x4_splat(pscale[i + 1]);
        float* c0 = ctx + (long)(i0 + i) * h + hh * hd;
        float* c1 = c0 + h;
        const int two = i + 1 < rows;
        for (int d = 0; d < hd4; d += 4) {
          v128_t r0, r1;
          mm16_2x4(a, sp, vt + (long)d * sp, sp, sp, &r0, &r1);
          v128_t vsc = wasm_v128_load(vs + d);
          v128_t o0 = wasm_f32x4_mul(wasm_f32x4_convert_i32x4(r0), wasm_f32x4_mul(s0, vsc));
          v128_t o1 = wasm_f32x4_mul(wasm_f32x4_convert_i32x4(r1), wasm_f32x4_mul(s1, vsc));
          if (d + 4 <= hd) {
            wasm_v128_store(c0 + d, o0);
            if (two) wasm_v128_store(c1 + d, o1);
          } else {
            float t0[4], t1[4];
            wasm_v128_store(t0, o0);
            wasm_v128_store(t1, o1);
            for (int c = 0; c < hd - d; c++) {
              c0[d + c] = t0[c];
              if (two) c1[d + c] = t1[c];
            }
          }
        }
      }
    }
  }
#undef KEEP
}
