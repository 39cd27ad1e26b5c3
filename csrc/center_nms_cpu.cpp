// Instance-center NMS on the CPU: a separable window maximum (row pass, then column pass), both
// parallel over rows, then a selection over the few positive survivors.
#include "center_nms.h"

#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <memory>
#include <mutex>
#include <utility>

#include "checks.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif

namespace pdlkit {

at::Tensor check_center_nms_args(const at::Tensor& heatmap, const char* name, int64_t nms_kernel,
                                 int64_t top_k) {
  check_defined(heatmap, name);
  check_floating(heatmap, name);
  TORCH_CHECK(heatmap.dim() == 2 || (heatmap.dim() == 3 && heatmap.size(0) == 1), name,
              " must be [H, W] or [1, H, W], got shape ", heatmap.sizes());
  TORCH_CHECK(nms_kernel >= 1 && nms_kernel % 2 == 1, "nms_kernel must be odd and >= 1, got ",
              nms_kernel);
  TORCH_CHECK(top_k >= 1, "top_k must be >= 1, got ", top_k);
  return heatmap.dim() == 3 ? heatmap.select(0, 0) : heatmap;
}

std::vector<CenterCandidate> select_top_centers(std::vector<CenterCandidate> candidates,
                                                int64_t top_k, int64_t num_pixels) {
  const int64_t k = std::min(top_k, num_pixels);
  if (k <= 0 || static_cast<int64_t>(candidates.size()) < k) return candidates;  // kth <= 0
  std::vector<float> scores(candidates.size());
  for (size_t i = 0; i < candidates.size(); ++i) scores[i] = candidates[i].score;
  std::nth_element(scores.begin(), scores.begin() + (k - 1), scores.end(), std::greater<float>());
  const float kth = scores[k - 1];
  std::vector<CenterCandidate> kept;
  for (const auto& c : candidates)
    if (c.score > kth) kept.push_back(c);
  return kept;
}

namespace {

// acc[i] = max(acc[i], values[i]).  GCC does not vectorise float maxima by itself (NaN rules), so
// on x86-64 an AVX2 loop is picked at load time; NaN is detected separately and raises.
void max_into_scalar(float* acc, const float* values, int64_t count) {
  for (int64_t i = 0; i < count; ++i) acc[i] = values[i] > acc[i] ? values[i] : acc[i];
}

#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((target("avx2"))) void max_into_avx2(float* acc, const float* values, int64_t count) {
  int64_t i = 0;
  for (; i + 8 <= count; i += 8)
    _mm256_storeu_ps(acc + i, _mm256_max_ps(_mm256_loadu_ps(acc + i), _mm256_loadu_ps(values + i)));
  max_into_scalar(acc + i, values + i, count - i);
}

bool has_avx2() {
  static const bool available = (__builtin_cpu_init(), __builtin_cpu_supports("avx2"));
  return available;
}
#endif

void max_into(float* acc, const float* values, int64_t count) {
#if defined(__x86_64__) && defined(__GNUC__)
  if (has_avx2()) return max_into_avx2(acc, values, count);
#endif
  max_into_scalar(acc, values, count);
}

// The window maximum of the thresholded map is (m > threshold ? m : -1) with m the window maximum
// of the raw heatmap (see nms_positive_survivor), so the passes take maxima of raw values.
// nan_probe[x] accumulates v - v: 0 for finite values, NaN for NaN (and for infinities, which the
// caller tells apart by testing v != v on the rows the probe flags).
void row_window_max(const float* row, int64_t width, int64_t radius, float* window_max, float* nan_probe) {
  for (int64_t x = 0; x < width; ++x) {
    window_max[x] = row[x];
    nan_probe[x] = nan_probe[x] + (row[x] - row[x]);
  }
  for (int64_t d = 1; d <= radius && d < width; ++d) {
    max_into(window_max, row + d, width - d);
    max_into(window_max + d, row, width - d);
  }
}

}  // namespace

std::vector<CenterCandidate> find_centers_cpu(const float* heatmap, int64_t height, int64_t width,
                                              float threshold, int64_t nms_kernel, int64_t top_k,
                                              bool* found_nan) {
  *found_nan = false;
  if (height == 0 || width == 0) return {};
  const int64_t radius = (nms_kernel - 1) / 2;
  std::unique_ptr<float[]> horizontal_max(new float[static_cast<size_t>(height * width)]);
  const int64_t grain = std::max<int64_t>(1, 32768 / width);
  std::mutex mutex;
  bool any_nan = false;
  at::parallel_for(0, height, grain, [&](int64_t begin, int64_t end) {
    std::vector<float> probe(width, 0.0f);
    bool nan = false;
    for (int64_t y = begin; y < end; ++y)
      row_window_max(heatmap + y * width, width, radius, horizontal_max.get() + y * width, probe.data());
    bool suspect = false;
    for (int64_t x = 0; x < width; ++x) suspect |= probe[x] != 0.0f;
    if (suspect)  // NaN or infinity somewhere in these rows: only NaN is an error
      for (int64_t i = begin * width; i < end * width; ++i) nan |= heatmap[i] != heatmap[i];
    if (nan) {
      std::lock_guard<std::mutex> lock(mutex);
      any_nan = true;
    }
  });
  if (any_nan) {
    *found_nan = true;
    return {};
  }

  // Column pass; each chunk keeps its survivors in raster order, chunks are joined by start row.
  // A pixel is a positive survivor when v > max(threshold, 0) and v is its window's raw maximum.
  std::vector<std::pair<int64_t, std::vector<CenterCandidate>>> chunks;
  at::parallel_for(0, height, grain, [&](int64_t begin, int64_t end) {
    std::vector<float> window_max(width);
    std::vector<CenterCandidate> found;
    for (int64_t y = begin; y < end; ++y) {
      const int64_t top = std::max<int64_t>(0, y - radius);
      const int64_t bottom = std::min<int64_t>(height - 1, y + radius);
      const float* first = horizontal_max.get() + top * width;
      std::copy(first, first + width, window_max.begin());
      for (int64_t r = top + 1; r <= bottom; ++r) {
        max_into(window_max.data(), horizontal_max.get() + r * width, width);
      }
      const float* values = heatmap + y * width;
      for (int64_t x = 0; x < width; ++x) {
        const float v = values[x];
        if (nms_positive_survivor(v, window_max[x], threshold)) found.push_back({y * width + x, v});
      }
    }
    std::lock_guard<std::mutex> lock(mutex);
    chunks.emplace_back(begin, std::move(found));
  });
  std::sort(chunks.begin(), chunks.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  std::vector<CenterCandidate> candidates;
  for (auto& chunk : chunks) candidates.insert(candidates.end(), chunk.second.begin(), chunk.second.end());
  return select_top_centers(std::move(candidates), top_k, height * width);
}

std::tuple<at::Tensor, at::Tensor> find_instance_centers_cpu(const at::Tensor& heatmap_in,
                                                             double threshold, int64_t nms_kernel,
                                                             int64_t top_k) {
  at::Tensor heatmap = check_center_nms_args(heatmap_in, "heatmap", nms_kernel, top_k);
  TORCH_CHECK(!std::isnan(threshold), "threshold must be a number, got NaN");
  check_device_type(heatmap, c10::DeviceType::CPU, "heatmap");
  heatmap = contiguous(heatmap);
  const int64_t height = heatmap.size(0), width = heatmap.size(1);
  bool found_nan = false;
  const std::vector<CenterCandidate> centers =
      find_centers_cpu(heatmap.data_ptr<float>(), height, width, static_cast<float>(threshold),
                       nms_kernel, top_k, &found_nan);
  TORCH_CHECK(!found_nan, "heatmap contains NaN");
  const int64_t count = static_cast<int64_t>(centers.size());
  at::Tensor points = at::empty({count, 2}, heatmap.options().dtype(at::kLong));
  at::Tensor scores = at::empty({count}, heatmap.options());
  int64_t* p = points.data_ptr<int64_t>();
  float* s = scores.data_ptr<float>();
  for (int64_t i = 0; i < count; ++i) {
    p[2 * i] = centers[i].index / (width > 0 ? width : 1);
    p[2 * i + 1] = centers[i].index % (width > 0 ? width : 1);
    s[i] = centers[i].score;
  }
  return {points, scores};
}

}  // namespace pdlkit

TORCH_LIBRARY_FRAGMENT(pdlkit, m) {
  m.def("find_instance_centers(Tensor heatmap, float threshold, int nms_kernel, int top_k) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(pdlkit, CPU, m) {
  m.impl("find_instance_centers", &pdlkit::find_instance_centers_cpu);
}
