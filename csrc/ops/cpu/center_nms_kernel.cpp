// Instance-center NMS on the CPU: a separable window maximum (row pass, then column pass), both
// parallel over rows, then a selection over the few positive survivors.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <memory>
#include <mutex>
#include <utility>

#include "../center_nms.h"
#include "../checks.h"
#include "simd.h"

namespace pdlkit {

namespace {

// acc[i] = max(acc[i], values[i]).  GCC does not vectorise float maxima by itself (NaN rules), so
// on x86-64 an AVX2 loop is picked at load time; NaN is detected separately and raises.
void max_into_scalar(float* acc, const float* values, int64_t count) {
  for (int64_t i = 0; i < count; ++i) acc[i] = values[i] > acc[i] ? values[i] : acc[i];
}

#if PDL_X86
PDL_TARGET_AVX2 void max_into_avx2(float* acc, const float* values, int64_t count) {
  int64_t i = 0;
  for (; i + 8 <= count; i += 8)
    _mm256_storeu_ps(acc + i, _mm256_max_ps(_mm256_loadu_ps(acc + i), _mm256_loadu_ps(values + i)));
  max_into_scalar(acc + i, values + i, count - i);
}
#endif

void max_into(float* acc, const float* values, int64_t count) {
#if PDL_X86
  if (simd::has_avx2()) return max_into_avx2(acc, values, count);
#endif
  max_into_scalar(acc, values, count);
}

// The window maximum of the thresholded map is (m > threshold ? m : -1) with m the window maximum
// of the raw heatmap (see nms_positive_survivor), so the passes take maxima of raw values.
void row_window_max(const float* row, int64_t width, int64_t radius, float* window_max) {
  std::copy(row, row + width, window_max);
  for (int64_t d = 1; d <= radius && d < width; ++d) {
    max_into(window_max, row + d, width - d);
    max_into(window_max + d, row, width - d);
  }
}

// Row pass: horizontal[y * W + x] = max of row y over [x - radius, x + radius].
void horizontal_window_max(const float* heatmap, int64_t height, int64_t width, int64_t radius, int64_t grain,
                           float* horizontal) {
  at::parallel_for(0, height, grain, [&](int64_t begin, int64_t end) {
    for (int64_t y = begin; y < end; ++y) row_window_max(heatmap + y * width, width, radius, horizontal + y * width);
  });
}

// Column pass over the row maxima: the positive survivors in raster order.  Each chunk keeps its
// survivors in order; chunks are joined by their first row.
std::vector<CenterCandidate> vertical_survivors(const float* heatmap, const float* horizontal, int64_t height,
                                                int64_t width, int64_t radius, int64_t grain, float threshold) {
  std::mutex mutex;
  std::vector<std::pair<int64_t, std::vector<CenterCandidate>>> chunks;
  at::parallel_for(0, height, grain, [&](int64_t begin, int64_t end) {
    std::vector<float> window_max(width);
    std::vector<CenterCandidate> found;
    for (int64_t y = begin; y < end; ++y) {
      const int64_t top = std::max<int64_t>(0, y - radius);
      const int64_t bottom = std::min<int64_t>(height - 1, y + radius);
      std::copy(horizontal + top * width, horizontal + (top + 1) * width, window_max.begin());
      for (int64_t r = top + 1; r <= bottom; ++r) max_into(window_max.data(), horizontal + r * width, width);
      const float* values = heatmap + y * width;
      for (int64_t x = 0; x < width; ++x)
        if (nms_positive_survivor(values[x], window_max[x], threshold)) found.push_back({y * width + x, values[x]});
    }
    std::lock_guard<std::mutex> lock(mutex);
    chunks.emplace_back(begin, std::move(found));
  });
  std::sort(chunks.begin(), chunks.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  std::vector<CenterCandidate> candidates;
  for (auto& chunk : chunks) candidates.insert(candidates.end(), chunk.second.begin(), chunk.second.end());
  return candidates;
}

// Pixels above `lower` in [begin, end) of the flat heatmap, appended in raster order; returns true
// when the range holds NaN.  Above-threshold pixels are few in a center heatmap, so this one
// streaming pass replaces the window maxima of the whole image (see find_centers_cpu).
bool scan_above_scalar(const float* values, int64_t begin, int64_t end, float lower, std::vector<int64_t>* above) {
  bool nan = false;
  for (int64_t i = begin; i < end; ++i) {
    nan |= values[i] != values[i];
    if (values[i] > lower) above->push_back(i);
  }
  return nan;
}

#if PDL_X86
PDL_TARGET_AVX512 bool scan_above_avx512(const float* values, int64_t begin, int64_t end, float lower,
                                         std::vector<int64_t>* above) {
  const __m512 bound = _mm512_set1_ps(lower);
  __mmask16 nan = 0;
  int64_t i = begin;
  for (; i + 16 <= end; i += 16) {
    const __m512 v = _mm512_loadu_ps(values + i);
    nan |= _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
    for (uint32_t hits = _mm512_cmp_ps_mask(v, bound, _CMP_GT_OQ); hits != 0; hits &= hits - 1)
      above->push_back(i + __builtin_ctz(hits));
  }
  return scan_above_scalar(values, i, end, lower, above) || nan != 0;
}

PDL_TARGET_AVX2 bool scan_above_avx2(const float* values, int64_t begin, int64_t end, float lower,
                                     std::vector<int64_t>* above) {
  const __m256 bound = _mm256_set1_ps(lower);
  int nan = 0;
  int64_t i = begin;
  for (; i + 8 <= end; i += 8) {
    const __m256 v = _mm256_loadu_ps(values + i);
    nan |= _mm256_movemask_ps(_mm256_cmp_ps(v, v, _CMP_UNORD_Q));
    for (uint32_t hits = _mm256_movemask_ps(_mm256_cmp_ps(v, bound, _CMP_GT_OQ)); hits != 0; hits &= hits - 1)
      above->push_back(i + __builtin_ctz(hits));
  }
  return scan_above_scalar(values, i, end, lower, above) || nan != 0;
}
#endif

bool scan_above(const float* values, int64_t begin, int64_t end, float lower, std::vector<int64_t>* above) {
#if PDL_X86
  if (simd::has_avx512()) return scan_above_avx512(values, begin, end, lower, above);
  if (simd::has_avx2()) return scan_above_avx2(values, begin, end, lower, above);
#endif
  return scan_above_scalar(values, begin, end, lower, above);
}

// True when no pixel of the clipped window around `index` exceeds its value (NaN-free heatmap).
bool is_window_max(const float* heatmap, int64_t height, int64_t width, int64_t radius, int64_t index) {
  const int64_t y = index / width, x = index % width;
  const float value = heatmap[index];
  const int64_t left = std::max<int64_t>(0, x - radius), right = std::min<int64_t>(width - 1, x + radius);
  for (int64_t r = std::max<int64_t>(0, y - radius); r <= std::min<int64_t>(height - 1, y + radius); ++r) {
    const float* row = heatmap + r * width;
    for (int64_t c = left; c <= right; ++c)
      if (row[c] > value) return false;
  }
  return true;
}

// The pixels above `lower` in raster order (chunks joined by their start); *nan: the heatmap holds NaN.
std::vector<int64_t> pixels_above(const float* heatmap, int64_t pixels, float lower, bool* nan) {
  std::mutex mutex;
  std::vector<std::pair<int64_t, std::vector<int64_t>>> chunks;
  bool any_nan = false;
  at::parallel_for(0, pixels, 1 << 16, [&](int64_t begin, int64_t end) {
    std::vector<int64_t> above;
    const bool chunk_nan = scan_above(heatmap, begin, end, lower, &above);
    std::lock_guard<std::mutex> lock(mutex);
    any_nan |= chunk_nan;
    chunks.emplace_back(begin, std::move(above));
  });
  std::sort(chunks.begin(), chunks.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  std::vector<int64_t> above;
  for (auto& chunk : chunks) above.insert(above.end(), chunk.second.begin(), chunk.second.end());
  *nan = any_nan;
  return above;
}

}  // namespace

// Only pixels above max(threshold, 0) can be centers (nms_positive_survivor).  When they are few
// (the usual case: a heatmap is near zero away from its peaks), each one's window is tested
// directly; otherwise the separable window maxima of the whole image are cheaper.
std::vector<CenterCandidate> find_centers_cpu(const at::Tensor& heatmap_2d, float threshold, int64_t nms_kernel,
                                              int64_t top_k, const char* name) {
  const int64_t height = heatmap_2d.size(0), width = heatmap_2d.size(1), pixels = height * width;
  if (pixels == 0) return {};
  const float* heatmap = heatmap_2d.data_ptr<float>();
  const int64_t radius = (nms_kernel - 1) / 2;
  bool nan = false;
  const std::vector<int64_t> above = pixels_above(heatmap, pixels, threshold > 0.0f ? threshold : 0.0f, &nan);
  TORCH_CHECK_VALUE(!nan, name, " contains NaN");
  const int64_t count = static_cast<int64_t>(above.size());
  if (count * (2 * radius + 1) <= pixels) {
    std::vector<uint8_t> keep(above.size());
    at::parallel_for(0, count, 256, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) keep[i] = is_window_max(heatmap, height, width, radius, above[i]);
    });
    std::vector<CenterCandidate> candidates;
    for (int64_t i = 0; i < count; ++i)
      if (keep[i]) candidates.push_back({above[i], heatmap[above[i]]});
    return select_top_centers(std::move(candidates), top_k, pixels);
  }
  const int64_t grain = std::max<int64_t>(1, 32768 / width);
  std::unique_ptr<float[]> horizontal(new float[static_cast<size_t>(pixels)]);
  horizontal_window_max(heatmap, height, width, radius, grain, horizontal.get());
  return select_top_centers(vertical_survivors(heatmap, horizontal.get(), height, width, radius, grain, threshold),
                            top_k, pixels);
}

}  // namespace pdlkit

TORCH_LIBRARY_IMPL(pdlkit, CPU, m) {
  m.impl("find_instance_centers", &pdlkit::find_instance_centers_on<c10::DeviceType::CPU, &pdlkit::find_centers_cpu>);
}
