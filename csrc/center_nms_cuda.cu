// Instance-center NMS on CUDA: one thread per pixel tests the survivor rule against the raw window
// maximum (windows are small, reads hit the caches), then ATen compacts the survivors in raster
// order and, when at least k of them exist, drops those not above the k-th largest.
#ifdef PDL_WITH_CUDA

#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cmath>

#include "center_nms.h"
#include "checks.h"

namespace pdlkit {
namespace {

constexpr int kThreads = 256;

__global__ void positive_survivor_kernel(const float* __restrict__ heatmap, int64_t height, int64_t width,
                                         int radius, float threshold, bool* __restrict__ survivor,
                                         int* __restrict__ found_nan) {
  const int64_t index = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (index >= height * width) return;
  const int64_t y = index / width, x = index % width;
  const float value = heatmap[index];
  if (value != value) *found_nan = 1;
  const int64_t top = max(y - radius, int64_t{0}), bottom = min(y + radius, height - 1);
  const int64_t left = max(x - radius, int64_t{0}), right = min(x + radius, width - 1);
  float window_max = -INFINITY;
  for (int64_t r = top; r <= bottom; ++r)
    for (int64_t c = left; c <= right; ++c) window_max = fmaxf(window_max, __ldg(heatmap + r * width + c));
  survivor[index] = nms_positive_survivor(value, window_max, threshold);
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> find_center_indices_cuda(const at::Tensor& heatmap_in, double threshold,
                                                            int64_t nms_kernel, int64_t top_k) {
  const c10::cuda::CUDAGuard guard(heatmap_in.device());
  const at::Tensor heatmap = contiguous(heatmap_in);
  const int64_t height = heatmap.size(0), width = heatmap.size(1), pixels = height * width;
  const auto long_options = heatmap.options().dtype(at::kLong);
  if (pixels == 0) return {at::empty({0}, long_options), at::empty({0}, heatmap.options())};
  at::Tensor survivor = at::empty({pixels}, heatmap.options().dtype(at::kBool));
  at::Tensor found_nan = at::zeros({1}, heatmap.options().dtype(at::kInt));
  const int64_t blocks = (pixels + kThreads - 1) / kThreads;
  positive_survivor_kernel<<<blocks, kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
      heatmap.data_ptr<float>(), height, width, static_cast<int>((nms_kernel - 1) / 2),
      static_cast<float>(threshold), survivor.data_ptr<bool>(), found_nan.data_ptr<int>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  TORCH_CHECK(found_nan.item<int>() == 0, "heatmap contains NaN");
  at::Tensor indices = at::nonzero(survivor).view({-1});  // ascending: raster order
  at::Tensor scores = heatmap.view({-1}).index_select(0, indices);
  const int64_t k = std::min(top_k, pixels);
  if (indices.size(0) >= k) {  // otherwise kth <= 0 and every positive survivor stays
    const at::Tensor kth = std::get<0>(at::topk(scores, k)).select(0, k - 1);
    const at::Tensor keep = scores > kth;
    indices = indices.masked_select(keep);
    scores = scores.masked_select(keep);
  }
  return {indices, scores};
}

namespace {

std::tuple<at::Tensor, at::Tensor> find_instance_centers_cuda(const at::Tensor& heatmap_in, double threshold,
                                                              int64_t nms_kernel, int64_t top_k) {
  const at::Tensor heatmap = check_center_nms_args(heatmap_in, "heatmap", nms_kernel, top_k);
  TORCH_CHECK(!std::isnan(threshold), "threshold must be a number, got NaN");
  check_device_type(heatmap, c10::DeviceType::CUDA, "heatmap");
  auto [indices, scores] = find_center_indices_cuda(heatmap, threshold, nms_kernel, top_k);
  const int64_t width = std::max<int64_t>(heatmap.size(1), 1);
  at::Tensor centers = at::stack({at::div(indices, width, "floor"), at::remainder(indices, width)}, 1);
  return {centers, scores};
}

}  // namespace
}  // namespace pdlkit

TORCH_LIBRARY_IMPL(pdlkit, CUDA, m) {
  m.impl("find_instance_centers", &pdlkit::find_instance_centers_cuda);
}

#endif  // PDL_WITH_CUDA
