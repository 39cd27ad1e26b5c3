// Row loops of the CPU merge (merge_rows.h).  On x86-64 the hot loops are written with intrinsics
// (GCC does not vectorise float selects and argmax by itself).
#include "merge_rows.h"

#include <cmath>
#include <cstring>
#include <limits>

#include "../panoptic_merge.h"
#include "simd.h"

#if defined(__GNUC__) && !defined(__clang__)
// GCC 12's AVX-512 headers build some conversions on _mm512_undefined_*(), which -Wall then reports
// as maybe uninitialised once they are inlined here: a false positive.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace pdlkit {
namespace merge_rows {
namespace {

// exp(x) for x <= 0 (softmax arguments x - max): x = n ln2 + r, |r| <= ln2 / 2 (ln2 in two parts,
// Cody-Waite), a degree-6 Taylor polynomial in r by fused multiply-adds (relative error below
// 3e-7), times 2^n.  Arguments under -87 give exp(-87) ~ 1.6e-38 instead of less, which keeps 2^n a
// normal float.  Every form rounds n to the nearest integer (ties to even), fuses the same steps
// and multiplies by the same 2^n, so all give the same bits.
constexpr float kLog2e = 1.44269504f, kLn2High = 0.693359375f, kLn2Low = -2.12194440e-4f;
constexpr float kFixedOne = static_cast<float>(1 << kProbabilityBits);

inline float exp_nonpositive(float x) {
  x = x < -87.0f ? -87.0f : x;
  const float shifter = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  const float n = (x * kLog2e + shifter) - shifter;
  float r = std::fma(-n, kLn2High, x);
  r = std::fma(-n, kLn2Low, r);
  float p = 1.0f / 720.0f;
  p = std::fma(p, r, 1.0f / 120.0f);
  p = std::fma(p, r, 1.0f / 24.0f);
  p = std::fma(p, r, 1.0f / 6.0f);
  p = std::fma(p, r, 0.5f);
  p = std::fma(p, r, 1.0f);
  p = std::fma(p, r, 1.0f);
  const int32_t scale_bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &scale_bits, sizeof(float));
  return p * scale;
}

// round(value) to int32, ties to even (the vector conversions' rounding).
inline int32_t to_fixed(float value) { return static_cast<int32_t>(std::lrint(value)); }

// How far ahead of the argmax loads each logit plane is prefetched, into L2 (a prefetch never
// faults, so reading past a plane's end is harmless).  Measured on one core (Zen 4, 19 planes):
// 2 KiB ahead into L2 streams the planes about twice as fast as 1 KiB ahead into L1 or the
// hardware prefetcher alone, which follows fewer streams than there are planes.
constexpr int64_t kPrefetchFloats = 512;

// The probabilities of one pixel from its exponentials: the thing slots' exp values wait in
// `fixed` (as float bits) until the denominator is known, then become fixed point.
void softmax_pixel(const float* logits, int64_t plane, int64_t channels, float best, const int32_t* slot_of_class,
                   int64_t slots, int32_t* fixed, int64_t stride) {
  float sum = 0.0f;
  for (int64_t c = 0; c < channels; ++c) {
    const float e = exp_nonpositive(logits[c * plane] - best);
    sum += e;
    if (slot_of_class[c] >= 0) std::memcpy(fixed + slot_of_class[c] * stride, &e, sizeof(float));
  }
  const float scale = kFixedOne / sum;
  for (int64_t t = 0; t < slots; ++t) {
    float e;
    std::memcpy(&e, fixed + t * stride, sizeof(float));
    fixed[t * stride] = to_fixed(e * scale);
  }
}

bool argmax_softmax_scalar(const float* logits_row, int64_t plane, int64_t channels, int64_t width,
                           const int32_t* slot_of_class, int64_t slots, bool probabilities, int32_t* row_arg,
                           int32_t* row_slot, int32_t* fixed, int64_t stride) {
  bool bad = false;
  for (int64_t x = 0; x < width; ++x) {
    float best = logits_row[x];
    int32_t best_channel = 0;
    bool finite = std::isfinite(best);
    for (int64_t c = 1; c < channels; ++c) {
      const float v = logits_row[c * plane + x];
      if (v > best) {
        best = v;
        best_channel = static_cast<int32_t>(c);
      }
      finite &= std::isfinite(v);
    }
    bad |= !finite;
    row_arg[x] = best_channel;
    row_slot[x] = slot_of_class[best_channel];
    if (probabilities && row_slot[x] >= 0)
      softmax_pixel(logits_row + x, plane, channels, best, slot_of_class, slots, fixed + x, stride);
  }
  return bad;
}

// Index of the nearest center of each location (first on equal float32 distance).  Since the
// rounded square root never decreases, a center can only be closer when its squared distance is
// below the best one's: the vector forms take the roots only then.
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

// The thing pixels of a row, packed (branch-free: thing pixels are scattered).
int64_t compact_things_scalar(int64_t y, const float* oy, const float* ox, const int32_t* row_slot, int64_t begin,
                              int64_t width, float* loc_y, float* loc_x, int32_t* columns) {
  int64_t count = 0;
  for (int64_t x = begin; x < width; ++x) {
    columns[count] = static_cast<int32_t>(x);
    loc_y[count] = offset_location(y, oy[x]);
    loc_x[count] = offset_location(x, ox[x]);
    count += row_slot[x] >= 0;
  }
  return count;
}

// Areas by runs of equal labels: one increment per run, not a chain of dependent updates.
void add_areas_scalar(const int32_t* labels, int64_t width, int64_t* area) {
  for (int64_t x = 0; x < width;) {
    int64_t run_end = x + 1;
    while (run_end < width && labels[run_end] == labels[x]) ++run_end;
    area[labels[x]] += run_end - x;
    x = run_end;
  }
}

void widen_labels_scalar(const int32_t* labels, int64_t width, int64_t* semantic, int32_t* code) {
  for (int64_t x = 0; x < width; ++x) {
    semantic[x] = labels[x];
    code[x] = -1 - labels[x];
  }
}

// How many of `count` elements come before the first one aligned to `bytes` (all of them when
// none ever is).
template <typename T>
int64_t unaligned_head(const T* values, int64_t count, uintptr_t bytes) {
  const uintptr_t misaligned = reinterpret_cast<uintptr_t>(values) % bytes;
  if (misaligned % sizeof(T) != 0) return count;  // never aligned: no streaming at all
  const int64_t head = misaligned == 0 ? 0 : static_cast<int64_t>((bytes - misaligned) / sizeof(T));
  return head < count ? head : count;
}

#if PDL_X86
// AVX2 + FMA forms of the loops above, 8 pixels at a time.
PDL_TARGET_AVX2 inline __m256 exp_nonpositive_avx2(__m256 x) {
  x = _mm256_max_ps(x, _mm256_set1_ps(-87.0f));
  const __m256 n =
      _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(kLog2e)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(kLn2High), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(kLn2Low), r);
  __m256 p = _mm256_set1_ps(1.0f / 720.0f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  const __m256i exponent = _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127));
  return _mm256_mul_ps(p, _mm256_castsi256_ps(_mm256_slli_epi32(exponent, 23)));
}

// The probabilities of 8 pixels whose per-pixel maximum is `best` (lanes that are no thing pixel
// are computed and ignored: cheaper than gathering).
PDL_TARGET_AVX2 void softmax_avx2(const float* logits, int64_t plane, int64_t channels, __m256 best,
                                  const int32_t* slot_of_class, int64_t slots, int32_t* fixed, int64_t stride) {
  __m256 sum = _mm256_setzero_ps();
  for (int64_t c = 0; c < channels; ++c) {
    const __m256 e = exp_nonpositive_avx2(_mm256_sub_ps(_mm256_loadu_ps(logits + c * plane), best));
    sum = _mm256_add_ps(sum, e);
    if (slot_of_class[c] >= 0) _mm256_storeu_ps(reinterpret_cast<float*>(fixed + slot_of_class[c] * stride), e);
  }
  const __m256 scale = _mm256_div_ps(_mm256_set1_ps(kFixedOne), sum);
  for (int64_t t = 0; t < slots; ++t) {
    int32_t* row = fixed + t * stride;
    const __m256 e = _mm256_loadu_ps(reinterpret_cast<const float*>(row));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(row), _mm256_cvtps_epi32(_mm256_mul_ps(e, scale)));
  }
}

PDL_TARGET_AVX2 bool argmax_softmax_avx2(const float* logits_row, int64_t plane, int64_t channels, int64_t width,
                                         const int32_t* slot_of_class, int64_t slots, bool probabilities,
                                         int32_t* row_arg, int32_t* row_slot, int32_t* fixed, int64_t stride) {
  const __m256 zero = _mm256_setzero_ps();
  __m256 check = zero;  // accumulates logit * 0: stays 0 unless a logit is NaN or infinite
  // Up to 8 slot entries live in a register (one permute per block); more need a gather.
  const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i table = _mm256_maskload_epi32(
      slot_of_class, _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int32_t>(channels)), lanes));
  int64_t x = 0;
  for (; x + 8 <= width; x += 8) {
    __m256 best = _mm256_loadu_ps(logits_row + x);
    __m256i best_channel = _mm256_setzero_si256();
    check = _mm256_add_ps(check, _mm256_mul_ps(best, zero));
    for (int64_t c = 1; c < channels; ++c) {
      _mm_prefetch(reinterpret_cast<const char*>(logits_row + c * plane + x + kPrefetchFloats), _MM_HINT_T1);
      const __m256 v = _mm256_loadu_ps(logits_row + c * plane + x);
      const __m256 greater = _mm256_cmp_ps(v, best, _CMP_GT_OQ);
      best = _mm256_blendv_ps(best, v, greater);
      best_channel =
          _mm256_blendv_epi8(best_channel, _mm256_set1_epi32(static_cast<int32_t>(c)), _mm256_castps_si256(greater));
      check = _mm256_add_ps(check, _mm256_mul_ps(v, zero));
    }
    const __m256i slot = channels <= 8 ? _mm256_permutevar8x32_epi32(table, best_channel)
                                       : _mm256_i32gather_epi32(slot_of_class, best_channel, 4);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(row_arg + x), best_channel);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(row_slot + x), slot);
    const int thing = _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpgt_epi32(slot, _mm256_set1_epi32(-1))));
    if (probabilities && thing != 0)
      softmax_avx2(logits_row + x, plane, channels, best, slot_of_class, slots, fixed + x, stride);
  }
  bool bad = _mm256_movemask_ps(_mm256_cmp_ps(check, zero, _CMP_NEQ_UQ)) != 0;
  if (x < width)
    bad |= argmax_softmax_scalar(logits_row + x, plane, channels, width - x, slot_of_class, slots, probabilities,
                                 row_arg + x, row_slot + x, fixed + x, stride);
  return bad;
}

// The same with 8 (AVX2) or 4 (SSE2) locations at a time; sqrt, mul, sub and add are IEEE
// round-to-nearest in both, so results are bit-identical to the scalar loop.
PDL_TARGET_AVX2 void nearest_centers_avx2(const float* loc_y, const float* loc_x, int64_t count, const float* center_y,
                                          const float* center_x, int64_t num_centers, int32_t* nearest) {
  int64_t i = 0;
  for (; i + 8 <= count; i += 8) {
    const __m256 ly = _mm256_loadu_ps(loc_y + i), lx = _mm256_loadu_ps(loc_x + i);
    __m256 best = _mm256_set1_ps(std::numeric_limits<float>::infinity()), best_square = best;
    __m256i best_index = _mm256_setzero_si256();
    for (int64_t k = 0; k < num_centers; ++k) {
      const __m256 dy = _mm256_sub_ps(_mm256_set1_ps(center_y[k]), ly);
      const __m256 dx = _mm256_sub_ps(_mm256_set1_ps(center_x[k]), lx);
      const __m256 square = _mm256_add_ps(_mm256_mul_ps(dy, dy), _mm256_mul_ps(dx, dx));
      if (_mm256_movemask_ps(_mm256_cmp_ps(square, best_square, _CMP_LT_OQ)) == 0) continue;
      const __m256 d = _mm256_sqrt_ps(square);
      const __m256 closer = _mm256_cmp_ps(d, best, _CMP_LT_OQ);
      best = _mm256_blendv_ps(best, d, closer);
      best_square = _mm256_blendv_ps(best_square, square, closer);
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
    __m128 best = _mm_set1_ps(std::numeric_limits<float>::infinity()), best_square = best;
    __m128i best_index = _mm_setzero_si128();
    for (int64_t k = 0; k < num_centers; ++k) {
      const __m128 dy = _mm_sub_ps(_mm_set1_ps(center_y[k]), ly);
      const __m128 dx = _mm_sub_ps(_mm_set1_ps(center_x[k]), lx);
      const __m128 square = _mm_add_ps(_mm_mul_ps(dy, dy), _mm_mul_ps(dx, dx));
      if (_mm_movemask_ps(_mm_cmplt_ps(square, best_square)) == 0) continue;
      const __m128 d = _mm_sqrt_ps(square);
      const __m128 closer = _mm_cmplt_ps(d, best);
      const __m128i closer_bits = _mm_castps_si128(closer);
      best = _mm_or_ps(_mm_and_ps(closer, d), _mm_andnot_ps(closer, best));
      best_square = _mm_or_ps(_mm_and_ps(closer, square), _mm_andnot_ps(closer, best_square));
      best_index = _mm_or_si128(_mm_and_si128(closer_bits, _mm_set1_epi32(static_cast<int32_t>(k))),
                                _mm_andnot_si128(closer_bits, best_index));
    }
    _mm_storeu_si128(reinterpret_cast<__m128i*>(nearest + i), best_index);
  }
  nearest_centers_scalar(loc_y + i, loc_x + i, count - i, center_y, center_x, num_centers, nearest + i);
}

// Streaming stores of whole aligned 32-byte blocks (the head up to alignment and the tail: plain).
PDL_TARGET_AVX2 void widen_labels_avx2(const int32_t* labels, int64_t width, int64_t* semantic, int32_t* code) {
  int64_t x = unaligned_head(semantic, width, 32);
  widen_labels_scalar(labels, x, semantic, code);
  for (; x + 8 <= width; x += 8) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(labels + x));
    _mm256_stream_si256(reinterpret_cast<__m256i*>(semantic + x), _mm256_cvtepi32_epi64(_mm256_castsi256_si128(v)));
    _mm256_stream_si256(reinterpret_cast<__m256i*>(semantic + x + 4),
                        _mm256_cvtepi32_epi64(_mm256_extracti128_si256(v, 1)));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(code + x), _mm256_sub_epi32(_mm256_set1_epi32(-1), v));
  }
  widen_labels_scalar(labels + x, width - x, semantic + x, code + x);
}

PDL_TARGET_AVX2 void stream_copy_avx2(const int32_t* source, int64_t count, int32_t* destination) {
  int64_t x = unaligned_head(destination, count, 32);
  std::memcpy(destination, source, x * sizeof(int32_t));
  for (; x + 8 <= count; x += 8)
    _mm256_stream_si256(reinterpret_cast<__m256i*>(destination + x),
                        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(source + x)));
  std::memcpy(destination + x, source + x, (count - x) * sizeof(int32_t));
}

// AVX-512: 16 lanes, mask registers for the selects, scalef for 2^n (the same product as the
// other forms: 2^n is a normal float).
PDL_TARGET_AVX512 inline __m512 exp_nonpositive_avx512(__m512 x) {
  x = _mm512_max_ps(x, _mm512_set1_ps(-87.0f));
  const __m512 n =
      _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(kLog2e)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(kLn2High), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(kLn2Low), r);
  __m512 p = _mm512_set1_ps(1.0f / 720.0f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(p, n);
}

PDL_TARGET_AVX512 void softmax_avx512(const float* logits, int64_t plane, int64_t channels, __m512 best,
                                      const int32_t* slot_of_class, int64_t slots, int32_t* fixed, int64_t stride) {
  __m512 sum = _mm512_setzero_ps();
  for (int64_t c = 0; c < channels; ++c) {
    const __m512 e = exp_nonpositive_avx512(_mm512_sub_ps(_mm512_loadu_ps(logits + c * plane), best));
    sum = _mm512_add_ps(sum, e);
    if (slot_of_class[c] >= 0) _mm512_storeu_ps(fixed + slot_of_class[c] * stride, e);
  }
  const __m512 scale = _mm512_div_ps(_mm512_set1_ps(kFixedOne), sum);
  for (int64_t t = 0; t < slots; ++t) {
    int32_t* row = fixed + t * stride;
    _mm512_storeu_si512(row, _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(row), scale)));
  }
}

// Up to 32 slot entries live in two registers (one permute per block); more need a gather.
PDL_TARGET_AVX512 inline __m512i load_first(const int32_t* values, int64_t count) {
  if (count <= 0) return _mm512_set1_epi32(-1);
  const __mmask16 mask = count >= 16 ? 0xFFFF : static_cast<__mmask16>((1u << count) - 1);
  return _mm512_mask_loadu_epi32(_mm512_set1_epi32(-1), mask, values);
}

PDL_TARGET_AVX512 bool argmax_softmax_avx512(const float* logits_row, int64_t plane, int64_t channels, int64_t width,
                                             const int32_t* slot_of_class, int64_t slots, bool probabilities,
                                             int32_t* row_arg, int32_t* row_slot, int32_t* fixed, int64_t stride) {
  const __m512i table_low = load_first(slot_of_class, channels),
                table_high = load_first(slot_of_class + 16, channels - 16);
  const __m512i no_slot = _mm512_set1_epi32(-1);
  __mmask16 bad = 0;  // NaN or infinity (fpclass categories 0x01 | 0x08 | 0x10 | 0x80)
  int64_t x = 0;
  for (; x + 16 <= width; x += 16) {
    __m512 best = _mm512_loadu_ps(logits_row + x);
    __m512i best_channel = _mm512_setzero_si512();
    bad |= _mm512_fpclass_ps_mask(best, 0x99);
    for (int64_t c = 1; c < channels; ++c) {
      _mm_prefetch(reinterpret_cast<const char*>(logits_row + c * plane + x + kPrefetchFloats), _MM_HINT_T1);
      const __m512 v = _mm512_loadu_ps(logits_row + c * plane + x);
      const __mmask16 greater = _mm512_cmp_ps_mask(v, best, _CMP_GT_OQ);
      best = _mm512_mask_blend_ps(greater, best, v);
      best_channel = _mm512_mask_blend_epi32(greater, best_channel, _mm512_set1_epi32(static_cast<int32_t>(c)));
      bad |= _mm512_fpclass_ps_mask(v, 0x99);
    }
    const __m512i slot = channels <= 32 ? _mm512_permutex2var_epi32(table_low, best_channel, table_high)
                                        : _mm512_i32gather_epi32(best_channel, slot_of_class, 4);
    _mm512_storeu_si512(row_arg + x, best_channel);
    _mm512_storeu_si512(row_slot + x, slot);
    if (probabilities && _mm512_cmpgt_epi32_mask(slot, no_slot) != 0)
      softmax_avx512(logits_row + x, plane, channels, best, slot_of_class, slots, fixed + x, stride);
  }
  bool any_bad = bad != 0;
  if (x < width)
    any_bad |= argmax_softmax_avx2(logits_row + x, plane, channels, width - x, slot_of_class, slots, probabilities,
                                   row_arg + x, row_slot + x, fixed + x, stride);
  return any_bad;
}

PDL_TARGET_AVX512 void nearest_centers_avx512(const float* loc_y, const float* loc_x, int64_t count,
                                              const float* center_y, const float* center_x, int64_t num_centers,
                                              int32_t* nearest) {
  int64_t i = 0;
  for (; i + 16 <= count; i += 16) {
    const __m512 ly = _mm512_loadu_ps(loc_y + i), lx = _mm512_loadu_ps(loc_x + i);
    __m512 best = _mm512_set1_ps(std::numeric_limits<float>::infinity()), best_square = best;
    __m512i best_index = _mm512_setzero_si512();
    for (int64_t k = 0; k < num_centers; ++k) {
      const __m512 dy = _mm512_sub_ps(_mm512_set1_ps(center_y[k]), ly);
      const __m512 dx = _mm512_sub_ps(_mm512_set1_ps(center_x[k]), lx);
      const __m512 square = _mm512_add_ps(_mm512_mul_ps(dy, dy), _mm512_mul_ps(dx, dx));
      const __mmask16 below = _mm512_cmp_ps_mask(square, best_square, _CMP_LT_OQ);
      if (below == 0) continue;
      const __m512 d = _mm512_sqrt_ps(square);
      const __mmask16 closer = _mm512_mask_cmp_ps_mask(below, d, best, _CMP_LT_OQ);
      best = _mm512_mask_blend_ps(closer, best, d);
      best_square = _mm512_mask_blend_ps(closer, best_square, square);
      best_index = _mm512_mask_blend_epi32(closer, best_index, _mm512_set1_epi32(static_cast<int32_t>(k)));
    }
    _mm512_storeu_si512(nearest + i, best_index);
  }
  nearest_centers_avx2(loc_y + i, loc_x + i, count - i, center_y, center_x, num_centers, nearest + i);
}
PDL_TARGET_AVX512 int64_t compact_things_avx512(int64_t y, const float* oy, const float* ox, const int32_t* row_slot,
                                                int64_t width, float* loc_y, float* loc_x, int32_t* columns) {
  const __m512 row = _mm512_set1_ps(static_cast<float>(y));
  const __m512i lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const __m512i no_slot = _mm512_set1_epi32(-1);
  int64_t count = 0, x = 0;
  for (; x + 16 <= width; x += 16) {
    const __mmask16 thing = _mm512_cmpgt_epi32_mask(_mm512_loadu_si512(row_slot + x), no_slot);
    if (thing == 0) continue;
    // Compress in registers, then one plain store each (compressing straight to memory is slow on
    // some CPUs); the stores write past `count`, into the room the caller leaves.
    const __m512i column = _mm512_add_epi32(_mm512_set1_epi32(static_cast<int32_t>(x)), lanes);
    const __m512 ly = _mm512_add_ps(row, _mm512_loadu_ps(oy + x));
    const __m512 lx = _mm512_add_ps(_mm512_cvtepi32_ps(column), _mm512_loadu_ps(ox + x));
    _mm512_storeu_si512(columns + count, _mm512_maskz_compress_epi32(thing, column));
    _mm512_storeu_ps(loc_y + count, _mm512_maskz_compress_ps(thing, ly));
    _mm512_storeu_ps(loc_x + count, _mm512_maskz_compress_ps(thing, lx));
    count += __builtin_popcount(thing);
  }
  return count + compact_things_scalar(y, oy, ox, row_slot, x, width, loc_y + count, loc_x + count, columns + count);
}

// 16 labels at a time: one masked count per distinct label of the block (one for most blocks).
PDL_TARGET_AVX512 void add_areas_avx512(const int32_t* labels, int64_t width, int64_t* area) {
  int64_t x = 0;
  for (; x + 16 <= width; x += 16) {
    const __m512i block = _mm512_loadu_si512(labels + x);
    for (__mmask16 left = 0xFFFF; left != 0;) {
      const int32_t label = labels[x + __builtin_ctz(left)];
      const __mmask16 same = _mm512_mask_cmpeq_epi32_mask(left, block, _mm512_set1_epi32(label));
      area[label] += __builtin_popcount(same);
      left &= static_cast<__mmask16>(~same);
    }
  }
  add_areas_scalar(labels + x, width - x, area);
}

PDL_TARGET_AVX512 void widen_labels_avx512(const int32_t* labels, int64_t width, int64_t* semantic, int32_t* code) {
  int64_t x = unaligned_head(semantic, width, 64);
  widen_labels_scalar(labels, x, semantic, code);
  for (; x + 16 <= width; x += 16) {
    const __m512i v = _mm512_loadu_si512(labels + x);
    _mm512_stream_si512(reinterpret_cast<__m512i*>(semantic + x), _mm512_cvtepi32_epi64(_mm512_castsi512_si256(v)));
    _mm512_stream_si512(reinterpret_cast<__m512i*>(semantic + x + 8),
                        _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(v, 1)));
    _mm512_storeu_si512(code + x, _mm512_sub_epi32(_mm512_set1_epi32(-1), v));
  }
  widen_labels_scalar(labels + x, width - x, semantic + x, code + x);
}

PDL_TARGET_AVX512 void stream_copy_avx512(const int32_t* source, int64_t count, int32_t* destination) {
  int64_t x = unaligned_head(destination, count, 64);
  std::memcpy(destination, source, x * sizeof(int32_t));
  for (; x + 16 <= count; x += 16)
    _mm512_stream_si512(reinterpret_cast<__m512i*>(destination + x), _mm512_loadu_si512(source + x));
  std::memcpy(destination + x, source + x, (count - x) * sizeof(int32_t));
}
#endif

}  // namespace

bool argmax_softmax(const float* logits_row, int64_t plane, int64_t channels, int64_t width,
                    const int32_t* slot_of_class, int64_t slots, bool probabilities, int32_t* row_arg,
                    int32_t* row_slot, int32_t* fixed, int64_t stride) {
#if PDL_X86
  if (simd::has_avx512())
    return argmax_softmax_avx512(logits_row, plane, channels, width, slot_of_class, slots, probabilities, row_arg,
                                 row_slot, fixed, stride);
  if (simd::has_avx2())
    return argmax_softmax_avx2(logits_row, plane, channels, width, slot_of_class, slots, probabilities, row_arg,
                               row_slot, fixed, stride);
#endif
  return argmax_softmax_scalar(logits_row, plane, channels, width, slot_of_class, slots, probabilities, row_arg,
                               row_slot, fixed, stride);
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

int64_t compact_things(int64_t y, const float* oy, const float* ox, const int32_t* row_slot, int64_t width,
                       float* loc_y, float* loc_x, int32_t* columns) {
#if PDL_X86
  if (simd::has_avx512()) return compact_things_avx512(y, oy, ox, row_slot, width, loc_y, loc_x, columns);
#endif
  return compact_things_scalar(y, oy, ox, row_slot, 0, width, loc_y, loc_x, columns);
}

void add_areas(const int32_t* labels, int64_t width, int64_t* area) {
#if PDL_X86
  if (simd::has_avx512()) return add_areas_avx512(labels, width, area);
#endif
  add_areas_scalar(labels, width, area);
}

void widen_labels(const int32_t* labels, int64_t width, int64_t* semantic, int32_t* code) {
#if PDL_X86
  if (simd::has_avx512()) return widen_labels_avx512(labels, width, semantic, code);
  if (simd::has_avx2()) return widen_labels_avx2(labels, width, semantic, code);
#endif
  widen_labels_scalar(labels, width, semantic, code);
}

void stream_copy(const int32_t* source, int64_t count, int32_t* destination) {
#if PDL_X86
  if (simd::has_avx512()) return stream_copy_avx512(source, count, destination);
  if (simd::has_avx2()) return stream_copy_avx2(source, count, destination);
#endif
  std::memcpy(destination, source, count * sizeof(int32_t));
}

void stream_fence() {
#if PDL_X86
  _mm_sfence();
#endif
}

}  // namespace merge_rows
}  // namespace pdlkit
