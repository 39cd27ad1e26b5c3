// Instance-center NMS on the CPU: a separable window maximum (row pass, then column pass), both
// parallel over rows, then a selection over the few positive survivors.
#include "center_nms.h"

#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <functional>
#include <limits>
#include <mutex>
#include <utility>

#include "checks.h"

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

// Maximum of the thresholded row over the horizontal window [x - radius, x + radius] (clipped).
void row_window_max(const float* row, int64_t width, float threshold, int64_t radius,
                    float* thresholded, float* window_max, bool* found_nan) {
  bool nan = false;
  for (int64_t x = 0; x < width; ++x) {
    const float v = row[x];
    nan |= v != v;
    thresholded[x] = nms_thresholded(v, threshold);
  }
  if (nan) *found_nan = true;
  for (int64_t x = 0; x < width; ++x) window_max[x] = thresholded[x];
  for (int64_t d = 1; d <= radius; ++d) {
    for (int64_t x = 0; x + d < width; ++x) window_max[x] = std::max(window_max[x], thresholded[x + d]);
    for (int64_t x = width - 1; x - d >= 0; --x) window_max[x] = std::max(window_max[x], thresholded[x - d]);
  }
}

}  // namespace

std::vector<CenterCandidate> find_centers_cpu(const float* heatmap, int64_t height, int64_t width,
                                              float threshold, int64_t nms_kernel, int64_t top_k,
                                              bool* found_nan) {
  *found_nan = false;
  if (height == 0 || width == 0) return {};
  const int64_t radius = (nms_kernel - 1) / 2;
  std::vector<float> horizontal_max(static_cast<size_t>(height * width));
  const int64_t grain = std::max<int64_t>(1, 32768 / width);
  std::mutex mutex;
  bool any_nan = false;
  at::parallel_for(0, height, grain, [&](int64_t begin, int64_t end) {
    std::vector<float> thresholded(width);
    bool nan = false;
    for (int64_t y = begin; y < end; ++y)
      row_window_max(heatmap + y * width, width, threshold, radius, thresholded.data(),
                     horizontal_max.data() + y * width, &nan);
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
  std::vector<std::pair<int64_t, std::vector<CenterCandidate>>> chunks;
  at::parallel_for(0, height, grain, [&](int64_t begin, int64_t end) {
    std::vector<float> window_max(width);
    std::vector<CenterCandidate> found;
    for (int64_t y = begin; y < end; ++y) {
      const int64_t top = std::max<int64_t>(0, y - radius);
      const int64_t bottom = std::min<int64_t>(height - 1, y + radius);
      std::copy(horizontal_max.begin() + top * width, horizontal_max.begin() + (top + 1) * width,
                window_max.begin());
      for (int64_t r = top + 1; r <= bottom; ++r) {
        const float* row = horizontal_max.data() + r * width;
        for (int64_t x = 0; x < width; ++x) window_max[x] = std::max(window_max[x], row[x]);
      }
      const float* values = heatmap + y * width;
      for (int64_t x = 0; x < width; ++x) {
        const float t = nms_thresholded(values[x], threshold);
        if (t > 0.0f && t == window_max[x]) found.push_back({y * width + x, values[x]});
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
