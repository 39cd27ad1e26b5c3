// Instance-center NMS on CUDA: one thread per pixel tests the survivor rule against the raw window
// maximum (windows are small, reads hit the caches), then ATen compacts the survivors in raster
// order; the top-k selection runs on the host over those few survivors (as on the CPU).
#ifdef PDL_WITH_CUDA

#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../center_nms.h"
#include "helpers.cuh"

namespace pdlkit {
namespace {

__global__ void positive_survivor_kernel(const float* __restrict__ heatmap, int64_t height, int64_t width, int radius,
                                         float threshold, bool* __restrict__ survivor, int* __restrict__ found_nan) {
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

std::vector<CenterCandidate> find_centers_cuda(const at::Tensor& heatmap, float threshold, int64_t nms_kernel,
                                               int64_t top_k, const char* name) {
  const c10::cuda::CUDAGuard guard(heatmap.device());
  const int64_t height = heatmap.size(0), width = heatmap.size(1), pixels = height * width;
  if (pixels == 0) return {};
  at::Tensor survivor = at::empty({pixels}, heatmap.options().dtype(at::kBool));
  at::Tensor found_nan = at::zeros({1}, heatmap.options().dtype(at::kInt));
  positive_survivor_kernel<<<cuda::blocks_for(pixels), cuda::kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
      heatmap.data_ptr<float>(), height, width, static_cast<int>((nms_kernel - 1) / 2), threshold,
      survivor.data_ptr<bool>(), found_nan.data_ptr<int>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  TORCH_CHECK_VALUE(found_nan.item<int>() == 0, name, " contains NaN");
  const at::Tensor indices = at::nonzero(survivor).view({-1});  // ascending: raster order
  const at::Tensor scores = heatmap.view({-1}).index_select(0, indices).cpu();
  const at::Tensor host_indices = indices.cpu();
  const int64_t count = host_indices.size(0);
  std::vector<CenterCandidate> candidates(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i)
    candidates[i] = {host_indices.data_ptr<int64_t>()[i], scores.data_ptr<float>()[i]};
  return select_top_centers(std::move(candidates), top_k, pixels);
}

}  // namespace pdlkit

TORCH_LIBRARY_IMPL(pdlkit, CUDA, m) {
  m.impl("find_instance_centers", &pdlkit::find_instance_centers_on<c10::DeviceType::CUDA, &pdlkit::find_centers_cuda>);
}

#endif  // PDL_WITH_CUDA
