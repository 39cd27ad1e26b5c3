// torch.ops.pdlkit.find_instance_centers: schema, argument checks and the device-independent host
// flow (check -> device kernel -> top-k selection -> (y, x) tensors).
#include "center_nms.h"

#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <functional>

#include "checks.h"

namespace pdlkit {

at::Tensor check_center_nms_args(const at::Tensor& heatmap, const char* name, double threshold, int64_t nms_kernel,
                                 int64_t top_k) {
  check_defined(heatmap, name);
  check_floating(heatmap, name);
  TORCH_CHECK_VALUE(heatmap.dim() == 2 || (heatmap.dim() == 3 && heatmap.size(0) == 1), name,
                    " must be [H, W] or [1, H, W], got shape ", heatmap.sizes());
  TORCH_CHECK_VALUE(nms_kernel >= 1 && nms_kernel % 2 == 1, "nms_kernel must be odd and >= 1, got ", nms_kernel);
  TORCH_CHECK_VALUE(top_k >= 1, "top_k must be >= 1, got ", top_k);
  TORCH_CHECK_VALUE(!std::isnan(threshold), "threshold must be a number, got NaN");
  return heatmap.dim() == 3 ? heatmap.select(0, 0) : heatmap;
}

std::vector<CenterCandidate> select_top_centers(std::vector<CenterCandidate> candidates, int64_t top_k,
                                                int64_t num_pixels) {
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

std::tuple<at::Tensor, at::Tensor> find_instance_centers(const at::Tensor& heatmap_in, double threshold,
                                                         int64_t nms_kernel, int64_t top_k, c10::DeviceType device_type,
                                                         FindCentersFn find_centers) {
  at::Tensor heatmap = check_center_nms_args(heatmap_in, "heatmap", threshold, nms_kernel, top_k);
  check_device_type(heatmap, device_type, "heatmap");
  heatmap = contiguous(heatmap);
  const int64_t width = std::max<int64_t>(heatmap.size(1), 1);
  const std::vector<CenterCandidate> centers =
      find_centers(heatmap, static_cast<float>(threshold), nms_kernel, top_k, "heatmap");
  const int64_t count = static_cast<int64_t>(centers.size());
  at::Tensor points = at::empty({count, 2}, at::kLong);
  at::Tensor scores = at::empty({count}, at::kFloat);
  int64_t* p = points.data_ptr<int64_t>();
  float* s = scores.data_ptr<float>();
  for (int64_t i = 0; i < count; ++i) {
    p[2 * i] = centers[i].index / width;
    p[2 * i + 1] = centers[i].index % width;
    s[i] = centers[i].score;
  }
  return {points.to(heatmap.device()), scores.to(heatmap.device())};
}

}  // namespace pdlkit

TORCH_LIBRARY_FRAGMENT(pdlkit, m) {
  m.def("find_instance_centers(Tensor heatmap, float threshold, int nms_kernel, int top_k) -> (Tensor, Tensor)");
}
