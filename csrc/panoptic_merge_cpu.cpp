// Grouping + panoptic merge on the CPU, planned around two passes over the image, parallel over rows:
//
//   pass 1  argmax over the logit planes (and the softmax denominator of thing pixels only), the
//           semantic map, stuff areas, the nearest center of every thing pixel and its class votes;
//   host    instance classes and ids from the votes, kept stuff classes;
//   pass 2  the panoptic map, and the class score exp(logit_c - max) / sum of each instance pixel.
//
// No C x H x W probability tensor is made: the logits are read once in full, then one plane value
// per instance pixel.  On x86-64 the hot loops are written with AVX2 intrinsics, picked at load
// time over plain loops; no fused multiply-add anywhere, so the float arithmetic of the distances
// is that of the reference.
#include "panoptic_merge.h"

#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <mutex>

#include "checks.h"

// x86-64: hand-vectorised AVX2 loops chosen at load time, SSE2 (always present) for the distances.
#if defined(__x86_64__) && defined(__GNUC__)
#define PDL_X86 1
#include <immintrin.h>
#else
#define PDL_X86 0
#endif

namespace pdlkit {

// ---------------------------------------------------------------------------------------------
// Host-side pieces shared with the CUDA implementation.

MergeArgs check_merge_args(const at::Tensor& semantic, const at::Tensor& center_heatmap,
                           const at::Tensor& offsets, at::IntArrayRef thing_ids, int64_t label_divisor,
                           int64_t void_label, double threshold, int64_t nms_kernel, int64_t top_k) {
  MergeArgs args;
  check_defined(semantic, "semantic");
  check_defined(offsets, "offsets");
  TORCH_CHECK(label_divisor >= 1, "label_divisor must be >= 1, got ", label_divisor);
  TORCH_CHECK(void_label >= std::numeric_limits<int32_t>::min() &&
                  void_label <= std::numeric_limits<int32_t>::max(),
              "void_label must fit in int32, got ", void_label);
  if (semantic.is_floating_point()) {
    TORCH_CHECK(semantic.scalar_type() == at::kFloat, "semantic logits must be float32, got ",
                semantic.scalar_type());
    TORCH_CHECK(semantic.dim() == 3 && semantic.size(0) >= 1,
                "semantic logits must be [C, H, W] with C >= 1, got shape ", semantic.sizes());
    args.logits = true;
    args.num_channels = semantic.size(0);
  } else {
    const auto type = semantic.scalar_type();
    TORCH_CHECK(type == at::kByte || type == at::kChar || type == at::kShort || type == at::kInt ||
                    type == at::kLong,
                "semantic must be float32 logits [C, H, W] or integer labels [H, W], got ", type);
    check_dim(semantic, 2, "semantic labels", "[H, W]");
  }
  args.height = semantic.size(-2);
  args.width = semantic.size(-1);
  at::Tensor heatmap = check_center_nms_args(center_heatmap, "center_heatmap", nms_kernel, top_k);
  TORCH_CHECK(!std::isnan(threshold), "threshold must be a number, got NaN");
  TORCH_CHECK(heatmap.size(0) == args.height && heatmap.size(1) == args.width,
              "center_heatmap has size ", heatmap.sizes(), ", semantic has [", args.height, ", ",
              args.width, "]");
  check_floating(offsets, "offsets");
  TORCH_CHECK(offsets.dim() == 3 && offsets.size(0) == 2 && offsets.size(1) == args.height &&
                  offsets.size(2) == args.width,
              "offsets must be [2, H, W] = [2, ", args.height, ", ", args.width, "] (y, x), got shape ",
              offsets.sizes());
  check_same_device(heatmap, "center_heatmap", semantic, "semantic");
  check_same_device(offsets, "offsets", semantic, "semantic");
  const int64_t class_limit = args.logits ? args.num_channels : label_divisor;
  for (const int64_t thing : thing_ids)
    TORCH_CHECK(thing >= 0 && thing < class_limit, "thing_ids holds ", thing, ", outside [0, ",
                class_limit, args.logits ? ") (the logit channels)" : ") (label_divisor)");
  args.semantic = contiguous(semantic);
  args.heatmap = contiguous(heatmap);
  args.offsets = contiguous(offsets);
  return args;
}

std::vector<int64_t> thing_slots(at::IntArrayRef thing_ids, int64_t num_classes) {
  std::vector<int64_t> classes;
  for (const int64_t thing : thing_ids)
    if (thing >= 0 && thing < num_classes) classes.push_back(thing);
  std::sort(classes.begin(), classes.end());
  classes.erase(std::unique(classes.begin(), classes.end()), classes.end());
  return classes;
}

void check_panoptic_range(int64_t num_classes, int64_t label_divisor, int64_t num_centers) {
  const double largest = static_cast<double>(std::max<int64_t>(num_classes - 1, 0)) *
                             static_cast<double>(label_divisor) +
                         static_cast<double>(num_centers);
  TORCH_CHECK(largest <= static_cast<double>(std::numeric_limits<int32_t>::max()),
              "label_divisor ", label_divisor, " with class ids up to ", num_classes - 1,
              " overflows the int32 panoptic ids");
}

InstanceTable resolve_instances(const std::vector<int64_t>& votes, int64_t num_centers,
                                const std::vector<int64_t>& thing_classes, int64_t label_divisor) {
  const int64_t slots = static_cast<int64_t>(thing_classes.size());
  InstanceTable table;
  table.class_of_center.assign(num_centers, -1);
  table.panoptic_of_center.assign(num_centers, 0);
  table.pixel_count.assign(num_centers, 0);
  std::vector<int64_t> next_id(slots, 0);
  for (int64_t k = 0; k < num_centers; ++k) {
    int64_t best_slot = -1, best_votes = 0, total = 0;
    for (int64_t t = 0; t < slots; ++t) {
      const int64_t v = votes[k * slots + t];
      total += v;
      if (v > best_votes) {  // strict: the first (smallest) class wins a tie
        best_votes = v;
        best_slot = t;
      }
    }
    table.pixel_count[k] = total;
    if (best_slot < 0) continue;
    const int64_t class_id = thing_classes[best_slot];
    table.class_of_center[k] = class_id;
    table.panoptic_of_center[k] = static_cast<int32_t>(class_id * label_divisor + (++next_id[best_slot]));
  }
  return table;
}

std::vector<uint8_t> kept_stuff(const std::vector<int64_t>& class_area,
                                const std::vector<int64_t>& thing_classes, int64_t stuff_area) {
  std::vector<uint8_t> kept(class_area.size());
  for (size_t c = 0; c < class_area.size(); ++c) kept[c] = class_area[c] > 0 && class_area[c] >= stuff_area;
  for (const int64_t thing : thing_classes) kept[thing] = 0;
  return kept;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> instance_outputs(
    const InstanceTable& table, const std::vector<CenterCandidate>& centers, int64_t width,
    const std::vector<double>& class_score_sums, bool logits) {
  std::vector<int64_t> kept;
  for (size_t k = 0; k < centers.size(); ++k)
    if (table.class_of_center[k] >= 0) kept.push_back(static_cast<int64_t>(k));
  const int64_t count = static_cast<int64_t>(kept.size());
  const auto long_options = at::TensorOptions().dtype(at::kLong);
  const auto float_options = at::TensorOptions().dtype(at::kFloat);
  at::Tensor ids = at::empty({count}, long_options), classes = at::empty({count}, long_options);
  at::Tensor points = at::empty({count, 2}, long_options);
  at::Tensor objectness = at::empty({count}, float_options), class_scores = at::empty({count}, float_options);
  at::Tensor scores = at::empty({count}, float_options);
  for (int64_t i = 0; i < count; ++i) {
    const int64_t k = kept[i];
    ids.data_ptr<int64_t>()[i] = table.panoptic_of_center[k];
    classes.data_ptr<int64_t>()[i] = table.class_of_center[k];
    points.data_ptr<int64_t>()[2 * i] = centers[k].index / width;
    points.data_ptr<int64_t>()[2 * i + 1] = centers[k].index % width;
    const float object_score = centers[k].score;
    const float class_score =
        logits ? static_cast<float>(class_score_sums[k] / static_cast<double>(table.pixel_count[k])) : 1.0f;
    objectness.data_ptr<float>()[i] = object_score;
    class_scores.data_ptr<float>()[i] = class_score;
    scores.data_ptr<float>()[i] = object_score * class_score;
  }
  return {ids, classes, points, objectness, class_scores, scores};
}

// ---------------------------------------------------------------------------------------------
// CPU kernels.

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

// One row of the logits: argmax over the C planes (first maximum, as torch.argmax) into row_max /
// row_arg, and, for pixels whose class has sum_wanted[class] set, the softmax denominator
// sum_c exp(logit_c - max) into sums (the planes of the row are still in cache then).  probe[x]
// (accumulated across rows) stays 0 unless some logit is NaN or infinite (v * 0 is NaN then).
void argmax_softmax_row_scalar(const float* logits_row, int64_t plane, int64_t channels, int64_t width,
                               const uint8_t* sum_wanted, float* row_max, int32_t* row_arg, float* sums,
                               float* probe) {
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
    row_max[x] = best;
    row_arg[x] = best_channel;
    probe[x] = check;
    if (sum_wanted != nullptr && sum_wanted[best_channel]) {
      float sum = 0.0f;
      for (int64_t c = 0; c < channels; ++c) sum += exp_nonpositive(logits_row[c * plane + x] - best);
      sums[x] = sum;
    }
  }
}

void exp_in_place_scalar(float* values, int64_t count) {
  for (int64_t i = 0; i < count; ++i) values[i] = exp_nonpositive(values[i]);
}

#if PDL_X86
// AVX2 versions of the three loops above (GCC does not vectorise float selects by itself).  Same
// operations in the same order, no FMA: argmax results are identical, exp values too.
__attribute__((target("avx2"))) inline __m256 exp_nonpositive_avx2(__m256 x) {
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
__attribute__((target("avx2"))) void argmax_softmax_row_avx2(const float* logits_row, int64_t plane,
                                                             int64_t channels, int64_t width,
                                                             const uint8_t* sum_wanted, float* row_max,
                                                             int32_t* row_arg, float* sums, float* probe) {
  const __m256 zero = _mm256_setzero_ps();
  int64_t x = 0;
  for (; x + 8 <= width; x += 8) {
    __m256 best = _mm256_loadu_ps(logits_row + x);
    __m256i best_channel = _mm256_setzero_si256();
    __m256 check = _mm256_add_ps(_mm256_loadu_ps(probe + x), _mm256_mul_ps(best, zero));
    for (int64_t c = 1; c < channels; ++c) {
      const __m256 v = _mm256_loadu_ps(logits_row + c * plane + x);
      const __m256 greater = _mm256_cmp_ps(v, best, _CMP_GT_OQ);
      best = _mm256_blendv_ps(best, v, greater);
      best_channel = _mm256_blendv_epi8(best_channel, _mm256_set1_epi32(static_cast<int32_t>(c)),
                                        _mm256_castps_si256(greater));
      check = _mm256_add_ps(check, _mm256_mul_ps(v, zero));
    }
    _mm256_storeu_ps(row_max + x, best);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(row_arg + x), best_channel);
    _mm256_storeu_ps(probe + x, check);
    if (sum_wanted == nullptr) continue;
    bool wanted = false;
    for (int lane = 0; lane < 8; ++lane) wanted |= sum_wanted[row_arg[x + lane]] != 0;
    if (!wanted) continue;
    __m256 sum = _mm256_setzero_ps();
    for (int64_t c = 0; c < channels; ++c)
      sum = _mm256_add_ps(sum, exp_nonpositive_avx2(_mm256_sub_ps(_mm256_loadu_ps(logits_row + c * plane + x), best)));
    _mm256_storeu_ps(sums + x, sum);
  }
  if (x < width)
    argmax_softmax_row_scalar(logits_row + x, plane, channels, width - x, sum_wanted, row_max + x, row_arg + x,
                              sums + x, probe + x);
}

__attribute__((target("avx2"))) void exp_in_place_avx2(float* values, int64_t count) {
  int64_t i = 0;
  for (; i + 8 <= count; i += 8) _mm256_storeu_ps(values + i, exp_nonpositive_avx2(_mm256_loadu_ps(values + i)));
  exp_in_place_scalar(values + i, count - i);
}

bool has_avx2() {
  static const bool available = (__builtin_cpu_init(), __builtin_cpu_supports("avx2"));
  return available;
}
#endif

void argmax_softmax_row(const float* logits_row, int64_t plane, int64_t channels, int64_t width,
                        const uint8_t* sum_wanted, float* row_max, int32_t* row_arg, float* sums, float* probe) {
#if PDL_X86
  if (has_avx2())
    return argmax_softmax_row_avx2(logits_row, plane, channels, width, sum_wanted, row_max, row_arg, sums, probe);
#endif
  argmax_softmax_row_scalar(logits_row, plane, channels, width, sum_wanted, row_max, row_arg, sums, probe);
}

void exp_in_place(float* values, int64_t count) {
#if PDL_X86
  if (has_avx2()) return exp_in_place_avx2(values, count);
#endif
  exp_in_place_scalar(values, count);
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
// The same with 8 (AVX2) or 4 (SSE2) locations at a time; sqrt, mul, sub and add are IEEE
// round-to-nearest in both, so results are bit-identical to the scalar loop.
__attribute__((target("avx2"))) void nearest_centers_avx2(const float* loc_y, const float* loc_x,
                                                          int64_t count, const float* center_y,
                                                          const float* center_x, int64_t num_centers,
                                                          int32_t* nearest) {
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
      best_index = _mm256_blendv_epi8(best_index, _mm256_set1_epi32(static_cast<int32_t>(k)),
                                      _mm256_castps_si256(closer));
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
#endif

void nearest_centers(const float* loc_y, const float* loc_x, int64_t count, const float* center_y,
                     const float* center_x, int64_t num_centers, int32_t* nearest) {
#if PDL_X86
  if (has_avx2()) return nearest_centers_avx2(loc_y, loc_x, count, center_y, center_x, num_centers, nearest);
  return nearest_centers_sse2(loc_y, loc_x, count, center_y, center_x, num_centers, nearest);
#else
  nearest_centers_scalar(loc_y, loc_x, count, center_y, center_x, num_centers, nearest);
#endif
}

template <typename T>
std::unique_ptr<T[]> uninitialized(int64_t n) {
  return std::unique_ptr<T[]>(new T[static_cast<size_t>(std::max<int64_t>(n, 1))]);
}

// Per-chunk accumulators of pass 1, summed under a mutex at the end of each chunk.
struct VoteTotals {
  std::vector<int64_t> votes;       // [K * T]
  std::vector<int64_t> class_area;  // [C]
  bool bad_logits = false, bad_offsets = false;
};

template <typename label_t>
void label_range(const label_t* labels, int64_t count, int64_t* low, int64_t* high) {
  std::mutex mutex;
  int64_t lo = std::numeric_limits<int64_t>::max(), hi = std::numeric_limits<int64_t>::min();
  at::parallel_for(0, count, 1 << 16, [&](int64_t begin, int64_t end) {
    int64_t l = std::numeric_limits<int64_t>::max(), h = std::numeric_limits<int64_t>::min();
    for (int64_t i = begin; i < end; ++i) {
      const int64_t v = static_cast<int64_t>(labels[i]);
      l = v < l ? v : l;
      h = v > h ? v : h;
    }
    std::lock_guard<std::mutex> lock(mutex);
    lo = std::min(lo, l);
    hi = std::max(hi, h);
  });
  *low = lo;
  *high = hi;
}

}  // namespace

MergeOutputs panoptic_merge_cpu(const at::Tensor& semantic_in, const at::Tensor& center_heatmap,
                                const at::Tensor& offsets_in, at::IntArrayRef thing_ids,
                                int64_t label_divisor, int64_t stuff_area, int64_t void_label,
                                double threshold, int64_t nms_kernel, int64_t top_k) {
  MergeArgs args = check_merge_args(semantic_in, center_heatmap, offsets_in, thing_ids, label_divisor,
                                    void_label, threshold, nms_kernel, top_k);
  check_device_type(args.semantic, c10::DeviceType::CPU, "semantic");
  const int64_t height = args.height, width = args.width, pixels = height * width;
  const bool logits = args.logits;

  // Label input: the class range comes from one min/max pass.
  int64_t num_classes = args.num_channels;
  if (!logits) {
    num_classes = 0;
    if (pixels > 0) {
      int64_t low = 0, high = 0;
      AT_DISPATCH_INTEGRAL_TYPES(args.semantic.scalar_type(), "panoptic_merge_label_range", [&] {
        label_range(args.semantic.data_ptr<scalar_t>(), pixels, &low, &high);
      });
      TORCH_CHECK(low >= 0 && high < label_divisor, "semantic labels must lie in [0, label_divisor=",
                  label_divisor, "), got values in [", low, ", ", high, "]");
      num_classes = high + 1;
    }
  }

  bool heatmap_nan = false;
  const std::vector<CenterCandidate> centers =
      find_centers_cpu(args.heatmap.data_ptr<float>(), height, width, static_cast<float>(threshold),
                       nms_kernel, top_k, &heatmap_nan);
  TORCH_CHECK(!heatmap_nan, "center_heatmap contains NaN");
  const int64_t num_centers = static_cast<int64_t>(centers.size());
  check_panoptic_range(num_classes, label_divisor, num_centers);

  const std::vector<int64_t> thing_classes = thing_slots(thing_ids, num_classes);
  const int64_t slots = static_cast<int64_t>(thing_classes.size());
  std::vector<int32_t> slot_of_class(std::max<int64_t>(num_classes, 1), -1);
  std::vector<uint8_t> is_thing(std::max<int64_t>(num_classes, 1), 0);
  for (int64_t t = 0; t < slots; ++t) {
    slot_of_class[thing_classes[t]] = static_cast<int32_t>(t);
    is_thing[thing_classes[t]] = 1;
  }
  std::vector<float> center_y(num_centers), center_x(num_centers);
  for (int64_t k = 0; k < num_centers; ++k) {
    center_y[k] = static_cast<float>(centers[k].index / width);
    center_x[k] = static_cast<float>(centers[k].index % width);
  }

  const auto cpu_long = at::TensorOptions().dtype(at::kLong);
  at::Tensor semantic_out = at::empty({height, width}, cpu_long);
  at::Tensor panoptic = at::empty({height, width}, at::TensorOptions().dtype(at::kInt));
  int64_t* labels = semantic_out.data_ptr<int64_t>();
  const float* offset_y = args.offsets.data_ptr<float>();
  const float* offset_x = offset_y + pixels;
  const float* logit_data = logits ? args.semantic.data_ptr<float>() : nullptr;
  // Per pixel: its center (-1: none); for instance pixels of logits also the softmax max and sum.
  auto nearest_map = uninitialized<int32_t>(num_centers > 0 ? pixels : 0);
  auto pixel_max = uninitialized<float>(logits && num_centers > 0 ? pixels : 0);
  auto pixel_sum = uninitialized<float>(logits && num_centers > 0 ? pixels : 0);

  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(width, 1));
  VoteTotals totals;
  totals.votes.assign(num_centers * slots, 0);
  totals.class_area.assign(std::max<int64_t>(num_classes, 1), 0);
  std::mutex mutex;

  // ---- pass 1 -------------------------------------------------------------------------------
  at::parallel_for(0, height, grain, [&](int64_t begin, int64_t end) {
    VoteTotals local;
    local.votes.assign(num_centers * slots, 0);
    local.class_area.assign(std::max<int64_t>(num_classes, 1), 0);
    std::vector<float> row_max(width), row_sum(width), logit_probe(width, 0.0f), offset_probe(width, 0.0f),
        loc_y(width), loc_x(width);
    std::vector<int32_t> row_arg(width), columns(width), nearest(width);
    for (int64_t y = begin; y < end; ++y) {
      const int64_t row_start = y * width;
      if (logits) {
        argmax_softmax_row(logit_data + row_start, pixels, num_classes, width,
                           num_centers > 0 ? is_thing.data() : nullptr, row_max.data(), row_arg.data(),
                           row_sum.data(), logit_probe.data());
      } else {
        AT_DISPATCH_INTEGRAL_TYPES(args.semantic.scalar_type(), "panoptic_merge_labels", [&] {
          const scalar_t* row = args.semantic.data_ptr<scalar_t>() + row_start;
          for (int64_t x = 0; x < width; ++x) row_arg[x] = static_cast<int32_t>(row[x]);
        });
      }
      int64_t* label_row = labels + row_start;
      for (int64_t x = 0; x < width; ++x) label_row[x] = row_arg[x];
      // Areas by runs of equal labels: one increment per run instead of a chain of dependent
      // read-modify-writes on one counter.
      for (int64_t x = 0; x < width;) {
        const int32_t label = row_arg[x];
        int64_t run_end = x + 1;
        while (run_end < width && row_arg[run_end] == label) ++run_end;
        local.class_area[label] += run_end - x;
        x = run_end;
      }
      const float* oy = offset_y + row_start;
      const float* ox = offset_x + row_start;
      for (int64_t x = 0; x < width; ++x) offset_probe[x] = offset_probe[x] + (oy[x] * 0.0f + ox[x] * 0.0f);
      if (num_centers == 0) continue;

      int64_t count = 0;
      for (int64_t x = 0; x < width; ++x) {
        if (slot_of_class[row_arg[x]] < 0) continue;
        columns[count] = static_cast<int32_t>(x);
        loc_y[count] = offset_location(y, oy[x]);
        loc_x[count] = offset_location(x, ox[x]);
        ++count;
      }
      int32_t* nearest_row = nearest_map.get() + row_start;
      std::fill(nearest_row, nearest_row + width, -1);
      if (count == 0) continue;
      nearest_centers(loc_y.data(), loc_x.data(), count, center_y.data(), center_x.data(), num_centers,
                      nearest.data());
      int64_t run_vote = -1, run_length = 0;  // votes by runs of one (center, class), as areas
      for (int64_t i = 0; i < count; ++i) {
        const int32_t x = columns[i];
        nearest_row[x] = nearest[i];
        const int64_t vote = nearest[i] * slots + slot_of_class[row_arg[x]];
        if (vote != run_vote) {
          if (run_length > 0) local.votes[run_vote] += run_length;
          run_vote = vote;
          run_length = 0;
        }
        ++run_length;
      }
      if (run_length > 0) local.votes[run_vote] += run_length;
      if (logits) {
        float* max_row = pixel_max.get() + row_start;
        float* sum_row = pixel_sum.get() + row_start;
        for (int64_t i = 0; i < count; ++i) {
          max_row[columns[i]] = row_max[columns[i]];
          sum_row[columns[i]] = row_sum[columns[i]];
        }
      }
    }
    for (int64_t x = 0; x < width; ++x) {
      // NaN compares unequal to 0 as well.
      if (logit_probe[x] != 0.0f) local.bad_logits = true;
      if (offset_probe[x] != 0.0f) local.bad_offsets = true;
    }
    std::lock_guard<std::mutex> lock(mutex);
    for (size_t i = 0; i < local.votes.size(); ++i) totals.votes[i] += local.votes[i];
    for (size_t i = 0; i < local.class_area.size(); ++i) totals.class_area[i] += local.class_area[i];
    totals.bad_logits |= local.bad_logits;
    totals.bad_offsets |= local.bad_offsets;
  });
  TORCH_CHECK(!totals.bad_logits, "semantic logits contain NaN or infinity");
  TORCH_CHECK(!totals.bad_offsets, "offsets contain NaN or infinity");

  // ---- instance classes and ids, kept stuff ---------------------------------------------------
  const InstanceTable table = resolve_instances(totals.votes, num_centers, thing_classes, label_divisor);
  const std::vector<uint8_t> stuff = kept_stuff(totals.class_area, thing_classes, stuff_area);
  std::vector<int32_t> stuff_panoptic(stuff.size());
  for (size_t c = 0; c < stuff.size(); ++c)
    stuff_panoptic[c] = stuff[c] ? static_cast<int32_t>(static_cast<int64_t>(c) * label_divisor)
                                 : static_cast<int32_t>(void_label);
  std::vector<int32_t> class_of_center(num_centers);
  for (int64_t k = 0; k < num_centers; ++k) class_of_center[k] = static_cast<int32_t>(table.class_of_center[k]);

  // ---- pass 2 -------------------------------------------------------------------------------
  std::vector<double> class_score_sums(num_centers, 0.0);
  int32_t* panoptic_data = panoptic.data_ptr<int32_t>();
  at::parallel_for(0, height, grain, [&](int64_t begin, int64_t end) {
    std::vector<double> local_sums(logits ? num_centers : 0, 0.0);
    std::vector<float> probabilities(width);
    std::vector<int32_t> members(width);
    for (int64_t y = begin; y < end; ++y) {
      const int64_t row_start = y * width;
      const int64_t* label_row = labels + row_start;
      int32_t* panoptic_row = panoptic_data + row_start;
      for (int64_t x = 0; x < width; ++x) panoptic_row[x] = stuff_panoptic[label_row[x]];
      if (num_centers == 0) continue;
      const int32_t* nearest_row = nearest_map.get() + row_start;
      int64_t count = 0;
      for (int64_t x = 0; x < width; ++x) {
        const int32_t k = nearest_row[x];
        if (k < 0) continue;
        panoptic_row[x] = table.panoptic_of_center[k];
        members[count++] = static_cast<int32_t>(x);
      }
      if (!logits || count == 0) continue;
      const float* max_row = pixel_max.get() + row_start;
      for (int64_t i = 0; i < count; ++i) {
        const int64_t x = members[i];
        probabilities[i] = logit_data[class_of_center[nearest_row[x]] * pixels + row_start + x] - max_row[x];
      }
      exp_in_place(probabilities.data(), count);
      const float* sum_row = pixel_sum.get() + row_start;
      for (int64_t i = 0; i < count; ++i) probabilities[i] = probabilities[i] / sum_row[members[i]];
      // Sums by runs of one instance (in double), flushed when the instance changes.
      int32_t run_center = nearest_row[members[0]];
      double run_sum = 0.0;
      for (int64_t i = 0; i < count; ++i) {
        const int32_t k = nearest_row[members[i]];
        if (k != run_center) {
          local_sums[run_center] += run_sum;
          run_center = k;
          run_sum = 0.0;
        }
        run_sum += static_cast<double>(probabilities[i]);
      }
      local_sums[run_center] += run_sum;
    }
    if (!logits) return;
    std::lock_guard<std::mutex> lock(mutex);
    for (int64_t k = 0; k < num_centers; ++k) class_score_sums[k] += local_sums[k];
  });

  auto instances = instance_outputs(table, centers, std::max<int64_t>(width, 1), class_score_sums, logits);
  return {panoptic, semantic_out, std::get<0>(instances), std::get<1>(instances), std::get<2>(instances),
          std::get<3>(instances), std::get<4>(instances), std::get<5>(instances)};
}

}  // namespace pdlkit

TORCH_LIBRARY_FRAGMENT(pdlkit, m) {
  m.def(
      "panoptic_merge(Tensor semantic, Tensor center_heatmap, Tensor offsets, int[] thing_ids, "
      "int label_divisor, int stuff_area, int void_label, float threshold, int nms_kernel, int top_k) "
      "-> (Tensor panoptic, Tensor semantic, Tensor ids, Tensor classes, Tensor centers, "
      "Tensor objectness, Tensor class_scores, Tensor scores)");
}

TORCH_LIBRARY_IMPL(pdlkit, CPU, m) {
  m.impl("panoptic_merge", &pdlkit::panoptic_merge_cpu);
}
