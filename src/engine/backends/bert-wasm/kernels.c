/*
 * bert-wasm compute kernels: freestanding C for wasm32 + SIMD128 (and relaxed SIMD when built with
 * -mrelaxed-simd -DBERT_RELAXED). No libc, no allocator: every buffer is a pointer into linear memory
 * that the TypeScript side lays out (src/engine/backends/bert-wasm/session.ts). Only the numeric
 * kernels live here; the layer loop, heads and memory plan are TypeScript.
 *
 * Quantized GEMM contract (both builds produce bit-identical results):
 *   activations a: uint8 [M][kp], 7-bit asymmetric per row: q = clamp(round(x / s) + z, 0, 127) with
 *                  s = (max - min) / 127 over the row (range widened to contain 0), z = round(-min / s)
 *   weights     w: int8  [N][kp], -127..127, per-output-channel scale ws[n]; wsum[n] = sum_k w[n][k]
 *   out[m][n] = (sum_k w[n][k] * a[m][k] - z[m] * wsum[n]) * s[m] * ws[n] + bias[n] (+ res[m][n])
 * The relaxed build computes the integer dot with i16x8.relaxed_dot_i8x16_i7x16_s (second operand
 * 0..127) followed by i32x4.dot_i16x8_s against a ones vector; the SIMD128 build sign/zero-extends
 * and uses i32x4.dot_i16x8_s twice. Integer sums are exact, so the two agree bit for bit.
 */
#include <stdint.h>
#include <wasm_simd128.h>

#define EXPORT(name) __attribute__((export_name(#name)))
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

/* erf(x), Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7). */
INLINE v128_t erf_f32x4(v128_t x) {
  v128_t sign = wasm_v128_and(x, wasm_i32x4_splat((int32_t)0x80000000));
  v128_t ax = wasm_f32x4_abs(x);
  v128_t t = wasm_f32x4_div(wasm_f32x4_splat(1.0f), wasm_f32x4_add(wasm_f32x4_splat(1.0f), wasm_f32x4_mul(ax, wasm_f32x4_splat(0.3275911f))));
  v128_t p = wasm_f32x4_splat(1.061405429f);
  p = wasm_f32x4_add(wasm_f32x4_mul(p, t), wasm_f32x4_splat(-1.453152027f));
  p = wasm_f32x4_add(wasm_f32x4_mul(p, t), wasm_f32x4_splat(1.421413741f));
  p = wasm_f32x4_add(wasm_f32x4_mul(p, t), wasm_f32x4_splat(-0.284496736f));
  p = wasm_f32x4_add(wasm_f32x4_mul(p, t), wasm_f32x4_splat(0.254829592f));
  p = wasm_f32x4_mul(p, t);
  v128_t e = exp_f32x4(wasm_f32x4_neg(wasm_f32x4_mul(ax, ax)));
  v128_t y = wasm_f32x4_sub(wasm_f32x4_splat(1.0f), wasm_f32x4_mul(p, e));
  return wasm_v128_or(y, sign);
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

/** out[r] += int8 row table[ids[r]] * scale[ids[r]] (h values, table row stride hp). */
INLINE void add_q8_row(float* out, const int8_t* row, float s, int h) {
  int i = 0;
  v128_t vs = wasm_f32x4_splat(s);
  for (; i + 4 <= h; i += 4) {
    v128_t q = wasm_i32x4_extend_low_i16x8(wasm_i16x8_extend_low_i8x16(wasm_v128_load32_zero(row + i)));
    wasm_v128_store(out + i, wasm_f32x4_add(wasm_v128_load(out + i), wasm_f32x4_mul(wasm_f32x4_convert_i32x4(q), vs)));
  }
  for (; i < h; i++) out[i] += (float)row[i] * s;
}

/**
 * Sum of word + position (+ token type) embeddings for rows = batch * seq tokens. Positions restart at
 * 0 every `seq` tokens. Tables are int8 with per-row scales, row stride hp. `types` may be 0.
 */
EXPORT(embed)
void embed(const int32_t* ids, const int32_t* types, int rows, int seq, int h, int hp, const int8_t* word,
           const float* word_scale, const int8_t* pos, const float* pos_scale, const int8_t* type,
           const float* type_scale, float* out) {
  for (int r = 0; r < rows; r++) {
    float* o = out + (long)r * h;
    for (int i = 0; i < h; i++) o[i] = 0.0f;
    int id = ids[r];
    add_q8_row(o, word + (long)id * hp, word_scale[id], h);
    if (type) {
      int t = types[r];
      add_q8_row(o, type + (long)t * hp, type_scale[t], h);
    }
    int p = r % seq;
    add_q8_row(o, pos + (long)p * hp, pos_scale[p], h);
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
    uint8_t* qr = q + (long)r * kp;
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
      wasm_v128_store(qr + i, wasm_u8x16_min(wasm_u8x16_narrow_i16x8(a, b), top));
    }
#undef QV
    for (; i < k; i++) {
      int32_t v = __builtin_bit_cast(int32_t, xr[i] * inv + ROUND_MAGIC) - (ROUND_MAGIC_BITS - zp);
      qr[i] = (uint8_t)(v < 0 ? 0 : v > 127 ? 127 : v);
    }
    for (; i < kp; i++) qr[i] = (uint8_t)zp;
  }
}

/* ------------------------------------------------------------------------------------------ */
/* Quantized GEMM                                                                             */
/* ------------------------------------------------------------------------------------------ */

INLINE v128_t dot16(v128_t w, v128_t a, v128_t acc) {
#ifdef BERT_RELAXED
  v128_t p = wasm_i16x8_relaxed_dot_i8x16_i7x16(w, a);
  return wasm_i32x4_add(acc, wasm_i32x4_dot_i16x8(p, wasm_i16x8_splat(1)));
#else
  v128_t lo = wasm_i32x4_dot_i16x8(wasm_i16x8_extend_low_i8x16(w), wasm_u16x8_extend_low_u8x16(a));
  v128_t hi = wasm_i32x4_dot_i16x8(wasm_i16x8_extend_high_i8x16(w), wasm_u16x8_extend_high_u8x16(a));
  return wasm_i32x4_add(acc, wasm_i32x4_add(lo, hi));
#endif
}

#define MR 3
#define NR 3

INLINE void tile(const int mr, const int nr, const uint8_t* a, const int8_t* w, int kp, int32_t* out) {
  v128_t acc[MR][NR];
  for (int i = 0; i < mr; i++)
    for (int j = 0; j < nr; j++) acc[i][j] = wasm_i32x4_splat(0);
  for (int k = 0; k < kp; k += 16) {
    v128_t av[MR], wv[NR];
    for (int i = 0; i < mr; i++) av[i] = wasm_v128_load(a + (long)i * kp + k);
    for (int j = 0; j < nr; j++) wv[j] = wasm_v128_load(w + (long)j * kp + k);
    for (int i = 0; i < mr; i++)
      for (int j = 0; j < nr; j++) acc[i][j] = dot16(wv[j], av[i], acc[i][j]);
  }
  for (int i = 0; i < mr; i++)
    for (int j = 0; j < nr; j++) out[i * NR + j] = hsum_i32(acc[i][j]);
}

#define MBLOCK 64

EXPORT(gemm_q8)
void gemm_q8(const uint8_t* a, const float* ascale, const int32_t* azp, int m, int kp, const int8_t* w, const float* wscale,
             const int32_t* wsum, const float* bias, int n, float* out, int ostride, const float* res) {
  int32_t sums[MR * NR];
  for (int m0 = 0; m0 < m; m0 += MBLOCK) {
    int m1 = m0 + MBLOCK < m ? m0 + MBLOCK : m;
    for (int j0 = 0; j0 < n; j0 += NR) {
      int nr = n - j0 < NR ? n - j0 : NR;
      const int8_t* wj = w + (long)j0 * kp;
      for (int i0 = m0; i0 < m1; i0 += MR) {
        int mr = m1 - i0 < MR ? m1 - i0 : MR;
        const uint8_t* ai = a + (long)i0 * kp;
        if (nr == 3) {
          switch (mr) {
            case 3: tile(3, 3, ai, wj, kp, sums); break;
            case 2: tile(2, 3, ai, wj, kp, sums); break;
            default: tile(1, 3, ai, wj, kp, sums); break;
          }
        } else if (nr == 2) {
          switch (mr) {
            case 3: tile(3, 2, ai, wj, kp, sums); break;
            case 2: tile(2, 2, ai, wj, kp, sums); break;
            default: tile(1, 2, ai, wj, kp, sums); break;
          }
        } else {
          switch (mr) {
            case 3: tile(3, 1, ai, wj, kp, sums); break;
            case 2: tile(2, 1, ai, wj, kp, sums); break;
            default: tile(1, 1, ai, wj, kp, sums); break;
          }
        }
        for (int i = 0; i < mr; i++) {
          float sa = ascale[i0 + i];
          int32_t za = azp[i0 + i];
          float* o = out + (long)(i0 + i) * ostride + j0;
          const float* rr = res ? res + (long)(i0 + i) * ostride + j0 : 0;
          for (int j = 0; j < nr; j++) {
            float v = (float)(sums[i * NR + j] - za * wsum[j0 + j]) * (sa * wscale[j0 + j]) + bias[j0 + j];
            if (rr) v += rr[j];
            o[j] = v;
          }
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

/**
 * Self-attention for one sequence of s tokens. qkv: [s][3h] (q | k | v), mask: [s] (0 = padding key),
 * ctx: [s][h]. scratch: s * (h / heads + 1) + 4 floats. Masked keys get probability exactly 0 (HF
 * adds finfo.min); a query with every key masked attends uniformly to all keys, as HF's softmax does
 * then. Every sum runs in key order, so padding a sequence does not change its bits.
 */
EXPORT(attention)
void attention(const float* qkv, int s, int h, int heads, const int32_t* mask, float* ctx, float* scratch) {
  int hd = h / heads;
  int stride = 3 * h;
  float scale = 1.0f / __builtin_sqrtf((float)hd);
  int any = 0;
  for (int j = 0; j < s; j++) any |= mask[j] != 0;
  float* scores = scratch;
  float* kt = scratch + ((s + 3) & ~3); /* K^T of one head: [hd][s] */
  for (int hh = 0; hh < heads; hh++) {
    const float* q0 = qkv + hh * hd;
    const float* k0 = qkv + h + hh * hd;
    const float* v0 = qkv + 2 * h + hh * hd;
    for (int j = 0; j < s; j++)
      for (int d = 0; d < hd; d++) kt[(long)d * s + j] = k0[(long)j * stride + d];
    for (int i = 0; i < s; i++) {
      const float* qi = q0 + (long)i * stride;
      /* scores = q K^T, 16 keys at a time, summed over d in order */
      int j = 0;
      for (; j + 16 <= s; j += 16) {
        v128_t a0 = wasm_f32x4_splat(0.0f), a1 = a0, a2 = a0, a3 = a0;
        for (int d = 0; d < hd; d++) {
          v128_t q = wasm_f32x4_splat(qi[d]);
          const float* kr = kt + (long)d * s + j;
          a0 = wasm_f32x4_add(a0, wasm_f32x4_mul(q, wasm_v128_load(kr)));
          a1 = wasm_f32x4_add(a1, wasm_f32x4_mul(q, wasm_v128_load(kr + 4)));
          a2 = wasm_f32x4_add(a2, wasm_f32x4_mul(q, wasm_v128_load(kr + 8)));
          a3 = wasm_f32x4_add(a3, wasm_f32x4_mul(q, wasm_v128_load(kr + 12)));
        }
        v128_t vs = wasm_f32x4_splat(scale);
        wasm_v128_store(scores + j, wasm_f32x4_mul(a0, vs));
        wasm_v128_store(scores + j + 4, wasm_f32x4_mul(a1, vs));
        wasm_v128_store(scores + j + 8, wasm_f32x4_mul(a2, vs));
        wasm_v128_store(scores + j + 12, wasm_f32x4_mul(a3, vs));
      }
      for (; j < s; j++) {
        float acc = 0.0f;
        for (int d = 0; d < hd; d++) acc += qi[d] * kt[(long)d * s + j];
        scores[j] = acc * scale;
      }
      float mx = -3.0e38f;
      for (j = 0; j < s; j++) {
        float sc = !any ? 0.0f : mask[j] ? scores[j] : -3.0e38f;
        scores[j] = sc;
        mx = sc > mx ? sc : mx;
      }
      j = 0;
      v128_t vm = wasm_f32x4_splat(mx);
      for (; j + 4 <= s; j += 4) {
        v128_t sc = wasm_v128_load(scores + j);
        v128_t keep = wasm_f32x4_gt(sc, wasm_f32x4_splat(-1.0e38f));
        wasm_v128_store(scores + j, wasm_v128_and(exp_f32x4(wasm_f32x4_sub(sc, vm)), keep));
      }
      for (; j < s; j++) {
        float sc = scores[j];
        scores[j] = sc > -1.0e38f ? wasm_f32x4_extract_lane(exp_f32x4(wasm_f32x4_splat(sc - mx)), 0) : 0.0f;
      }
      float sum = 0.0f;
      for (j = 0; j < s; j++) sum += scores[j];
      v128_t inv = wasm_f32x4_splat(1.0f / sum);
      /* ctx_i = sum_j p_j v_j, keys in order, 8 vectors of the head dimension at a time */
      float* ci = ctx + (long)i * h + hh * hd;
      int d = 0;
      for (; d + 32 <= hd; d += 32) {
        v128_t acc[8];
        for (int c = 0; c < 8; c++) acc[c] = wasm_f32x4_splat(0.0f);
        for (int jj = 0; jj < s; jj++) {
          v128_t pj = wasm_f32x4_splat(scores[jj]);
          const float* vr = v0 + (long)jj * stride + d;
          for (int c = 0; c < 8; c++) acc[c] = wasm_f32x4_add(acc[c], wasm_f32x4_mul(pj, wasm_v128_load(vr + 4 * c)));
        }
        for (int c = 0; c < 8; c++) wasm_v128_store(ci + d + 4 * c, wasm_f32x4_mul(acc[c], inv));
      }
      for (; d + 4 <= hd; d += 4) {
        v128_t acc = wasm_f32x4_splat(0.0f);
        for (int jj = 0; jj < s; jj++)
          acc = wasm_f32x4_add(acc, wasm_f32x4_mul(wasm_f32x4_splat(scores[jj]), wasm_v128_load(v0 + (long)jj * stride + d)));
        wasm_v128_store(ci + d, wasm_f32x4_mul(acc, inv));
      }
      for (; d < hd; d++) {
        float acc = 0.0f;
        for (int jj = 0; jj < s; jj++) acc += scores[jj] * v0[(long)jj * stride + d];
        ci[d] = acc * (1.0f / sum);
      }
    }
  }
}
