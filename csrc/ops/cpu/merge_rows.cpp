// Row loops of the CPU merge (merge_rows.h).  On x86-64 the hot loops are written with intrinsics
// (GCC does not vectorise float selects and argmax by itself).
#include "merge_rows.h"

#include <cstring>
#include <limits>

#include "../panoptic_merge.h"
#include "simd.h"

namespace pdlkit {
namespace merge_rows {
namespace {

// exp(x) for x <= 0 (softmax arguments x - max), written without branches or calls so that it
// vectorises: 2^n * p(r) with x = n ln2 + r, |r| <= ln2 / 2, and a degree-6 Taylor polynomial
// (relative error below 3e-7).  Arguments under -87 give exp(-87) ~ 1.6e-38 instead of less.
inline float exp_nonpositive(float x) {
  x = x < -87.0f ? -87.0f : x;
  const float shifter = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  const float shifted = x * 1.44269504f + shifter;
  const float n = shifted - shifter;
  const float r = (x - n * 0.693359375f) - n * -2.12194440e-4f;
  float p = 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  int32_t shifted_bits;
  std::memcpy(&shifted_bits, &shifted, sizeof(float));
  const int32_t exponent = (shifted_bits - 0x4B400000) + 127;  // n + bias
  const int32_t scale_bits = exponent << 23;
  float scale;
  std::memcpy(&scale, &scale_bits, sizeof(float));
  return p * scale;
}

// How far ahead of the argmax loads each logit plane is prefetched (a prefetch never faults, so
// reading past a plane's end is harmless).
constexpr int64_t kPrefetchFloats = 256;

// True when one of the `lanes` labels is a thing class.
inline bool any_thing(const int32_t* slot_of_class, const int32_t* labels, int lanes) {
  bool any = false;
  for (int lane = 0; lane < lanes; ++lane) any |= slot_of_class[labels[lane]] >= 0;
  return any;
}

void argmax_softmax_scalar(const float* logits_row, int64_t plane, int64_t channels, int64_t width,
                           const int32_t* slot_of_class, int64_t slots, int32_t* row_arg, float* probabilities,
                           int64_t stride, float* probe) {
  for (int64_t x = 0; x < width; ++x) {
    float best = logits_row[x];
    int32_t best_channel = 0;
    float check = probe[x] + best * 0.0f;
    for (int64_t c = 1; c < channels; ++c) {
      const float v = logits_row[c * plane + x];
      if (v > best) {
        best = v;
        best_channel = static_cast<int32_t>(c);
      }
      check = check + v * 0.0f;
    }
    row_arg[x] = best_channel;
    probe[x] = check;
    if (slot_of_class == nullptr || slot_of_class[best_channel] < 0) continue;
    float sum = 0.0f;
    for (int64_t c = 0; c < channels; ++c) {
      const float e = exp_nonpositive(logits_row[c * plane + x] - best);
      sum += e;
      if (slot_of_class[c] >= 0) probabilities[slot_of_class[c] * stride + x] = e;
    }
    for (int64_t t = 0; t < slots; ++t) probabilities[t * stride + x] = probabilities[t * stride + x] / sum;
  }
}

// Index of the nearest center of each location (first on equal float32 distance).
void nearest_centers_scalar(const float* loc_y, const float* loc_x, int64_t count, const float* center_y,
                            const float* center_x, int64_t num_centers, int32_t* nearest) {
  for (int64_t i = 0; i < count; ++i) {
    float best = std::numeric_limits<float>::infinity();
    int32_t best_index = 0;
    for (int64_t k = 0; k < num_centers; ++k) {
      const float d = center_distance(center_y[k], center_x[k], loc_y[i], loc_x[i]);
      if (d < best) {
        best = d;
        best_index = static_cast<int32_t>(k);
      }
    }
    nearest[i] = best_index;
  }
}

#if PDL_X86
// AVX2 versions of the three loops above (GCC does not vectorise float selects by itself).  Same
// operations in the same order, no FMA: argmax results are identical, exp values too.
PDL_TARGET_AVX2 inline __m256 exp_nonpositive_avx2(__m256 x) {
  x = _mm256_max_ps(x, _mm256_set1_ps(-87.0f));
  const __m256 shifter = _mm256_set1_ps(12582912.0f);
  const __m256 shifted = _mm256_add_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504f)), shifter);
  const __m256 n = _mm256_sub_ps(shifted, shifter);
  const __m256 r = _mm256_sub_ps(_mm256_sub_ps(x, _mm256_mul_ps(n, _mm256_set1_ps(0.693359375f))),
                                 _mm256_mul_ps(n, _mm256_set1_ps(-2.12194440e-4f)));
  __m256 p = _mm256_set1_ps(1.0f / 720.0f);
  p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(1.0f / 120.0f));
  p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(1.0f / 24.0f));
  p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(1.0f / 6.0f));
  p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(0.5f));
  p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(1.0f));
  p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(1.0f));
  const __m256i exponent = _mm256_add_epi32(
      _mm256_sub_epi32(_mm256_castps_si256(shifted), _mm256_set1_epi32(0x4B400000)), _mm256_set1_epi32(127));
  return _mm256_mul_ps(p, _mm256_castsi256_ps(_mm256_slli_epi32(exponent, 23)));
}

// Blocks of 8 pixels: the argmax, then the denominators when any of the 8 needs one (lanes that
// do not are computed and ignored: cheaper than gathering).
PDL_TARGET_AVX2 void argmax_softmax_avx2(const float* logits_row, int64_t plane, int64_t channels, int64_t width,
                                         const int32_t* slot_of_class, int64_t slots, int32_t* row_arg,
                                         float* probabilities, int64_t stride, float* probe) {
  const __m256 zero = _mm256_setzero_ps();
  int64_t x = 0;
  for (; x + 8 <= width; x += 8) {
    __m256 best = _mm256_loadu_ps(logits_row + x);
    __m256i best_channel = _mm256_setzero_si256();
    __m256 check = _mm256_add_ps(_mm256_loadu_ps(probe + x), _mm256_mul_ps(best, zero));
    for (int64_t c = 1; c < channels; ++c) {
      _mm_prefetch(reinterpret_cast<const char*>(logits_row + c * plane + x + kPrefetchFloats), _MM_HINT_T0);
      const __m256 v = _mm256_loadu_ps(logits_row + c * plane + x);
      const __m256 greater = _mm256_cmp_ps(v, best, _CMP_GT_OQ);
      best = _mm256_blendv_ps(best, v, greater);
      best_channel =
          _mm256_blendv_epi8(best_channel, _mm256_set1_epi32(static_cast<int32_t>(c)), _mm256_castps_si256(greater));
      check = _mm256_add_ps(check, _mm256_mul_ps(v, zero));
    }
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(row_arg + x), best_channel);
    _mm256_storeu_ps(probe + x, check);
    if (slot_of_class == nullptr || !any_thing(slot_of_class, row_arg + x, 8)) continue;
    // Lanes that are no thing pixel are computed and ignored: cheaper than gathering.
    __m256 sum = _mm256_setzero_ps();
    for (int64_t c = 0; c < channels; ++c) {
      const __m256 e = exp_nonpositive_avx2(_mm256_sub_ps(_mm256_loadu_ps(logits_row + c * plane + x), best));
      sum = _mm256_add_ps(sum, e);
      if (slot_of_class[c] >= 0) _mm256_storeu_ps(probabilities + slot_of_class[c] * stride + x, e);
    }
    for (int64_t t = 0; t < slots; ++t) {
      float* row = probabilities + t * stride + x;
      _mm256_storeu_ps(row, _mm256_div_ps(_mm256_loadu_ps(row), sum));
    }
  }
  if (x < width)
    argmax_softmax_scalar(logits_row + x, plane, channels, width - x, slot_of_class, slots, row_arg + x,
                          probabilities + x, stride, probe + x);
}

// The same with 8 (AVX2) or 4 (SSE2) locations at a time; sqrt, mul, sub and add are IEEE
// round-to-nearest in both, so results are bit-identical to the scalar loop.
PDL_TARGET_AVX2 void nearest_centers_avx2(const float* loc_y, const float* loc_x, int64_t count, const float* center_y,
                                          const float* center_x, int64_t num_centers, int32_t* nearest) {
  int64_t i = 0;
  for (; i + 8 <= count; i += 8) {
    const __m256 ly = _mm256_loadu_ps(loc_y + i), lx = _mm256_loadu_ps(loc_x + i);
    __m256 best = _mm256_set1_ps(std::numeric_limits<float>::infinity());
    __m256i best_index = _mm256_setzero_si256();
    for (int64_t k = 0; k < num_centers; ++k) {
      const __m256 dy = _mm256_sub_ps(_mm256_set1_ps(center_y[k]), ly);
      const __m256 dx = _mm256_sub_ps(_mm256_set1_ps(center_x[k]), lx);
      const __m256 d = _mm256_sqrt_ps(_mm256_add_ps(_mm256_mul_ps(dy, dy), _mm256_mul_ps(dx, dx)));
      const __m256 closer = _mm256_cmp_ps(d, best, _CMP_LT_OQ);
      best = _mm256_blendv_ps(best, d, closer);
      best_index =
          _mm256_blendv_epi8(best_index, _mm256_set1_epi32(static_cast<int32_t>(k)), _mm256_castps_si256(closer));
    }
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(nearest + i), best_index);
  }
  nearest_centers_scalar(loc_y + i, loc_x + i, count - i, center_y, center_x, num_centers, nearest + i);
}

void nearest_centers_sse2(const float* loc_y, const float* loc_x, int64_t count, const float* center_y,
                          const float* center_x, int64_t num_centers, int32_t* nearest) {
  int64_t i = 0;
  for (; i + 4 <= count; i += 4) {
    const __m128 ly = _mm_loadu_ps(loc_y + i), lx = _mm_loadu_ps(loc_x + i);
    __m128 best = _mm_set1_ps(std::numeric_limits<float>::infinity());
    __m128i best_index = _mm_setzero_si128();
    for (int64_t k = 0; k < num_centers; ++k) {
      const __m128 dy = _mm_sub_ps(_mm_set1_ps(center_y[k]), ly);
      const __m128 dx = _mm_sub_ps(_mm_set1_ps(center_x[k]), lx);
      const __m128 d = _mm_sqrt_ps(_mm_add_ps(_mm_mul_ps(dy, dy), _mm_mul_ps(dx, dx)));
      const __m128 closer = _mm_cmplt_ps(d, best);
      const __m128i closer_bits = _mm_castps_si128(closer);
      best = _mm_or_ps(_mm_and_ps(closer, d), _mm_andnot_ps(closer, best));
      best_index = _mm_or_si128(_mm_and_si128(closer_bits, _mm_set1_epi32(static_cast<int32_t>(k))),
                                _mm_andnot_si128(closer_bits, best_index));
    }
    _mm_storeu_si128(reinterpret_cast<__m128i*>(nearest + i), best_index);
  }
  nearest_centers_scalar(loc_y + i, loc_x + i, count - i, center_y, center_x, num_centers, nearest + i);
}

// AVX-512: the AVX2 loops at 16 lanes, with mask registers for the selects.
PDL_TARGET_AVX512 inline __m512 exp_nonpositive_avx512(__m512 x) {
  x = _mm512_max_ps(x, _mm512_set1_ps(-87.0f));
  const __m512 shifter = _mm512_set1_ps(12582912.0f);
  const __m512 shifted = _mm512_add_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504f)), shifter);
  const __m512 n = _mm512_sub_ps(shifted, shifter);
  const __m512 r = _mm512_sub_ps(_mm512_sub_ps(x, _mm512_mul_ps(n, _mm512_set1_ps(0.693359375f))),
                                 _mm512_mul_ps(n, _mm512_set1_ps(-2.12194440e-4f)));
  __m512 p = _mm512_set1_ps(1.0f / 720.0f);
  p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(1.0f / 120.0f));
  p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(1.0f / 24.0f));
  p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(1.0f / 6.0f));
  p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(0.5f));
  p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(1.0f));
  p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(1.0f));
  const __m512i exponent = _mm512_add_epi32(
      _mm512_sub_epi32(_mm512_castps_si512(shifted), _mm512_set1_epi32(0x4B400000)), _mm512_set1_epi32(127));
  return _mm512_mul_ps(p, _mm512_castsi512_ps(_mm512_slli_epi32(exponent, 23)));
}

PDL_TARGET_AVX512 void argmax_softmax_avx512(const float* logits_row, int64_t plane, int64_t channels, int64_t width,
                                             const int32_t* slot_of_class, int64_t slots, int32_t* row_arg,
                                             float* probabilities, int64_t stride, float* probe) {
  const __m512 zero = _mm512_setzero_ps();
  int64_t x = 0;
  for (; x + 16 <= width; x += 16) {
    __m512 best = _mm512_loadu_ps(logits_row + x);
    __m512i best_channel = _mm512_setzero_si512();
    __m512 check = _mm512_add_ps(_mm512_loadu_ps(probe + x), _mm512_mul_ps(best, zero));
    for (int64_t c = 1; c < channels; ++c) {
      // 16+ planes are more streams than the hardware prefetcher follows: fetch ahead by hand.
      _mm_prefetch(reinterpret_cast<const char*>(logits_row + c * plane + x + kPrefetchFloats), _MM_HINT_T0);
      const __m512 v = _mm512_loadu_ps(logits_row + c * plane + x);
      const __mmask16 greater = _mm512_cmp_ps_mask(v, best, _CMP_GT_OQ);
      best = _mm512_mask_blend_ps(greater, best, v);
      best_channel = _mm512_mask_blend_epi32(greater, best_channel, _mm512_set1_epi32(static_cast<int32_t>(c)));
      check = _mm512_add_ps(check, _mm512_mul_ps(v, zero));
    }
    _mm512_storeu_si512(row_arg + x, best_channel);
    _mm512_storeu_ps(probe + x, check);
    if (slot_of_class == nullptr || !any_thing(slot_of_class, row_arg + x, 16)) continue;
    __m512 sum = _mm512_setzero_ps();
    for (int64_t c = 0; c < channels; ++c) {
      const __m512 e = exp_nonpositive_avx512(_mm512_sub_ps(_mm512_loadu_ps(logits_row + c * plane + x), best));
      sum = _mm512_add_ps(sum, e);
      if (slot_of_class[c] >= 0) _mm512_storeu_ps(probabilities + slot_of_class[c] * stride + x, e);
    }
    for (int64_t t = 0; t < slots; ++t) {
      float* row = probabilities + t * stride + x;
      _mm512_storeu_ps(row, _mm512_div_ps(_mm512_loadu_ps(row), sum));
    }
  }
  if (x < width)
    argmax_softmax_avx2(logits_row + x, plane, channels, width - x, slot_of_class, slots, row_arg + x,
                        probabilities + x, stride, probe + x);
}

PDL_TARGET_AVX512 void nearest_centers_avx512(const float* loc_y, const float* loc_x, int64_t count,
                                              const float* center_y, const float* center_x, int64_t num_centers,
                                              int32_t* nearest) {
  int64_t i = 0;
  for (; i + 16 <= count; i += 16) {
    const __m512 ly = _mm512_loadu_ps(loc_y + i), lx = _mm512_loadu_ps(loc_x + i);
    __m512 best = _mm512_set1_ps(std::numeric_limits<float>::infinity());
    __m512i best_index = _mm512_setzero_si512();
    for (int64_t k = 0; k < num_centers; ++k) {
      const __m512 dy = _mm512_sub_ps(_mm512_set1_ps(center_y[k]), ly);
      const __m512 dx = _mm512_sub_ps(_mm512_set1_ps(center_x[k]), lx);
      const __m512 d = _mm512_sqrt_ps(_mm512_add_ps(_mm512_mul_ps(dy, dy), _mm512_mul_ps(dx, dx)));
      const __mmask16 closer = _mm512_cmp_ps_mask(d, best, _CMP_LT_OQ);
      best = _mm512_mask_blend_ps(closer, best, d);
      best_index = _mm512_mask_blend_epi32(closer, best_index, _mm512_set1_epi32(static_cast<int32_t>(k)));
    }
    _mm512_storeu_si512(nearest + i, best_index);
  }
  nearest_centers_avx2(loc_y + i, loc_x + i, count - i, center_y, center_x, num_centers, nearest + i);
}
#endif

}  // namespace

void argmax_softmax(const float* logits_row, int64_t plane, int64_t channels, int64_t width,
                    const int32_t* slot_of_class, int64_t slots, int32_t* row_arg, float* probabilities, int64_t stride,
                    float* probe) {
#if PDL_X86
  if (simd::has_avx512())
    return argmax_softmax_avx512(logits_row, plane, channels, width, slot_of_class, slots, row_arg, probabilities,
                                 stride, probe);
  if (simd::has_avx2())
    return argmax_softmax_avx2(logits_row, plane, channels, width, slot_of_class, slots, row_arg, probabilities, stride,
                               probe);
#endif
  argmax_softmax_scalar(logits_row, plane, channels, width, slot_of_class, slots, row_arg, probabilities, stride,
                        probe);
}

void nearest_centers(const float* loc_y, const float* loc_x, int64_t count, const float* center_y,
                     const float* center_x, int64_t num_centers, int32_t* nearest) {
#if PDL_X86
  if (simd::has_avx512()) return nearest_centers_avx512(loc_y, loc_x, count, center_y, center_x, num_centers, nearest);
  if (simd::has_avx2()) return nearest_centers_avx2(loc_y, loc_x, count, center_y, center_x, num_centers, nearest);
  if (simd::level() >= simd::Level::kSse2)
    return nearest_centers_sse2(loc_y, loc_x, count, center_y, center_x, num_centers, nearest);
#endif
  nearest_centers_scalar(loc_y, loc_x, count, center_y, center_x, num_centers, nearest);
}

}  // namespace merge_rows
}  // namespace pdlkit
