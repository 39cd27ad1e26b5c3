// Grouping + panoptic merge on CUDA, one thread per pixel in two kernels:
//
//   pass 1  argmax over the logit planes (coalesced per plane) and, for thing pixels, the softmax
//           max and denominator; nearest center with the centers staged in shared memory; class
//           votes and class areas counted with warp-aggregated atomics;
//   (instance classes and ids, kept stuff: the shared host flow, panoptic_merge.cpp)
//   pass 2  the panoptic map and each instance's class-probability sum (block-level shared
//           accumulators, one global atomic per instance and block).
#ifdef PDL_WITH_CUDA

#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <vector>

#include "../panoptic_merge.h"
#include "helpers.cuh"

namespace pdlkit {
namespace {

using cuda::kThreads;
using cuda::to_device;
constexpr int64_t kSharedSums = 1024;  // instances whose class-score sums fit in shared memory

// Adds `amount` at table[key] for every lane of the warp holding a key >= 0, one atomic per
// distinct key (neighbouring pixels mostly share their instance and class).
__device__ inline void warp_count(unsigned long long* table, int64_t key) {
  const unsigned group = __match_any_sync(0xffffffffu, key);
  const int leader = __ffs(group) - 1;
  if (key >= 0 && static_cast<int>(threadIdx.x % 32) == leader)
    atomicAdd(table + key, static_cast<unsigned long long>(__popc(group)));
}

// Every thread of a block reaches the __syncthreads and the warp collectives (no early return);
// threads past the image carry `inside = false`.
__global__ void merge_pass1_kernel(const float* __restrict__ logits, const int64_t* __restrict__ labels_in,
                                   int64_t num_classes, const float* __restrict__ offsets, int64_t height,
                                   int64_t width, const int* __restrict__ slot_of_class, int64_t slots,
                                   const float* __restrict__ center_y, const float* __restrict__ center_x,
                                   int64_t num_centers, int64_t* __restrict__ semantic,
                                   int32_t* __restrict__ nearest_center, float* __restrict__ pixel_max,
                                   float* __restrict__ pixel_sum, unsigned long long* __restrict__ votes,
                                   unsigned long long* __restrict__ class_area, int* __restrict__ bad_input) {
  __shared__ float tile_y[kThreads];
  __shared__ float tile_x[kThreads];
  const int64_t pixels = height * width;
  const int64_t index = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const bool inside = index < pixels;

  int64_t label = 0;
  float best_logit = 0.0f;
  if (inside) {
    if (logits != nullptr) {
      best_logit = logits[index];
      bool finite = isfinite(best_logit);
      for (int64_t c = 1; c < num_classes; ++c) {
        const float v = logits[c * pixels + index];
        finite &= isfinite(v);
        if (v > best_logit) {  // strict: the first maximum, as torch.argmax
          best_logit = v;
          label = c;
        }
      }
      if (!finite) atomicOr(bad_input, 1);
    } else {
      label = labels_in[index];
    }
    semantic[index] = label;
  }
  warp_count(class_area, inside ? label : -1);

  const int slot = inside ? slot_of_class[label] : -1;
  const bool thing = slot >= 0 && num_centers > 0;
  float loc_y = 0.0f, loc_x = 0.0f;
  if (inside) {
    const float oy = offsets[index], ox = offsets[pixels + index];
    if (!isfinite(oy) || !isfinite(ox)) atomicOr(bad_input + 1, 1);
    loc_y = offset_location(index / width, oy);
    loc_x = offset_location(index % width, ox);
  }
  float best = INFINITY;
  int32_t best_center = 0;
  for (int64_t start = 0; start < num_centers; start += kThreads) {
    const int64_t count = min(static_cast<int64_t>(kThreads), num_centers - start);
    __syncthreads();
    if (threadIdx.x < count) {
      tile_y[threadIdx.x] = center_y[start + threadIdx.x];
      tile_x[threadIdx.x] = center_x[start + threadIdx.x];
    }
    __syncthreads();
    if (thing) {
      for (int j = 0; j < count; ++j) {
        const float d = center_distance(tile_y[j], tile_x[j], loc_y, loc_x);
        if (d < best) {  // strict: the first center on equal distance
          best = d;
          best_center = static_cast<int32_t>(start + j);
        }
      }
    }
  }
  if (inside && num_centers > 0) nearest_center[index] = thing ? best_center : -1;
  warp_count(votes, thing ? static_cast<int64_t>(best_center) * slots + slot : -1);

  if (thing && logits != nullptr) {
    float sum = 0.0f;
    for (int64_t c = 0; c < num_classes; ++c) sum += expf(logits[c * pixels + index] - best_logit);
    pixel_max[index] = best_logit;
    pixel_sum[index] = sum;
  }
}

__global__ void merge_pass2_kernel(const float* __restrict__ logits, int64_t pixels,
                                   const int64_t* __restrict__ semantic, const int32_t* __restrict__ nearest_center,
                                   int64_t num_centers, const int32_t* __restrict__ panoptic_of_center,
                                   const int32_t* __restrict__ class_of_center,
                                   const int32_t* __restrict__ stuff_panoptic, const float* __restrict__ pixel_max,
                                   const float* __restrict__ pixel_sum, int32_t* __restrict__ panoptic,
                                   double* __restrict__ class_score_sums) {
  __shared__ double block_sums[kSharedSums];
  const bool shared_sums = logits != nullptr && num_centers <= kSharedSums;
  if (shared_sums)
    for (int64_t k = threadIdx.x; k < num_centers; k += blockDim.x) block_sums[k] = 0.0;
  __syncthreads();
  const int64_t index = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (index < pixels) {
    const int32_t k = num_centers > 0 ? nearest_center[index] : -1;
    if (k >= 0) {
      panoptic[index] = panoptic_of_center[k];
      if (logits != nullptr) {
        const float logit = logits[static_cast<int64_t>(class_of_center[k]) * pixels + index];
        const double probability =
            static_cast<double>(expf(logit - pixel_max[index])) / static_cast<double>(pixel_sum[index]);
        atomicAdd(shared_sums ? block_sums + k : class_score_sums + k, probability);
      }
    } else {
      panoptic[index] = stuff_panoptic[semantic[index]];
    }
  }
  if (!shared_sums) return;
  __syncthreads();
  for (int64_t k = threadIdx.x; k < num_centers; k += blockDim.x)
    if (block_sums[k] != 0.0) atomicAdd(class_score_sums + k, block_sums[k]);
}

class CudaMerge final : public MergeKernels {
 public:
  explicit CudaMerge(const MergeProblem& problem)
      : guard_(problem.semantic.device()),
        p_(problem),
        pixels_(problem.height * problem.width),
        options_(problem.semantic.options()),
        nearest_(at::empty({problem.num_centers() > 0 ? pixels_ : 0}, options_.dtype(at::kInt))),
        pixel_max_(at::empty({problem.logits && problem.num_centers() > 0 ? pixels_ : 0}, options_.dtype(at::kFloat))),
        pixel_sum_(at::empty_like(pixel_max_)) {}

  VoteTotals pass1() override {
    const int64_t num_centers = p_.num_centers(), slots = p_.slots();
    at::Tensor votes = at::zeros({std::max<int64_t>(num_centers * slots, 1)}, options_.dtype(at::kLong));
    at::Tensor class_area = at::zeros({std::max<int64_t>(p_.num_classes, 1)}, options_.dtype(at::kLong));
    at::Tensor bad_input = at::zeros({2}, options_.dtype(at::kInt));
    const at::Tensor labels = p_.logits ? at::Tensor() : p_.semantic.to(at::kLong).contiguous();
    const at::Device device = p_.semantic.device();
    const at::Tensor slot_of_class = to_device(p_.slot_of_class, at::kInt, device);
    const at::Tensor center_y = to_device(p_.center_y, at::kFloat, device);
    const at::Tensor center_x = to_device(p_.center_x, at::kFloat, device);
    if (pixels_ > 0) {
      merge_pass1_kernel<<<cuda::blocks_for(pixels_), kThreads, 0, stream()>>>(
          p_.logits ? p_.semantic.data_ptr<float>() : nullptr, p_.logits ? nullptr : labels.data_ptr<int64_t>(),
          p_.num_classes, p_.offsets.data_ptr<float>(), p_.height, p_.width, slot_of_class.data_ptr<int>(), slots,
          center_y.data_ptr<float>(), center_x.data_ptr<float>(), num_centers, p_.semantic_out.data_ptr<int64_t>(),
          nearest_.data_ptr<int32_t>(), pixel_max_.data_ptr<float>(), pixel_sum_.data_ptr<float>(),
          reinterpret_cast<unsigned long long*>(votes.data_ptr<int64_t>()),
          reinterpret_cast<unsigned long long*>(class_area.data_ptr<int64_t>()), bad_input.data_ptr<int>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
    const at::Tensor bad = bad_input.cpu(), votes_host = votes.cpu(), area_host = class_area.cpu();
    VoteTotals totals;
    totals.bad_logits = bad.data_ptr<int>()[0] != 0;
    totals.bad_offsets = bad.data_ptr<int>()[1] != 0;
    totals.votes.assign(votes_host.data_ptr<int64_t>(), votes_host.data_ptr<int64_t>() + num_centers * slots);
    totals.class_area.assign(area_host.data_ptr<int64_t>(), area_host.data_ptr<int64_t>() + area_host.numel());
    return totals;
  }

  std::vector<double> pass2(const InstanceAssignment& a) override {
    const int64_t num_centers = p_.num_centers();
    const at::Device device = p_.semantic.device();
    const at::Tensor panoptic_of_center = to_device(a.panoptic_of_center, at::kInt, device);
    const at::Tensor class_of_center = to_device(a.class_of_center, at::kInt, device);
    const at::Tensor stuff_panoptic = to_device(a.stuff_panoptic, at::kInt, device);
    at::Tensor sums = at::zeros({std::max<int64_t>(num_centers, 1)}, options_.dtype(at::kDouble));
    if (pixels_ > 0) {
      merge_pass2_kernel<<<cuda::blocks_for(pixels_), kThreads, 0, stream()>>>(
          p_.logits ? p_.semantic.data_ptr<float>() : nullptr, pixels_, p_.semantic_out.data_ptr<int64_t>(),
          nearest_.data_ptr<int32_t>(), num_centers, panoptic_of_center.data_ptr<int32_t>(),
          class_of_center.data_ptr<int32_t>(), stuff_panoptic.data_ptr<int32_t>(), pixel_max_.data_ptr<float>(),
          pixel_sum_.data_ptr<float>(), p_.panoptic.data_ptr<int32_t>(), sums.data_ptr<double>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
    if (!p_.logits) return {};
    const at::Tensor host = sums.cpu();
    return std::vector<double>(host.data_ptr<double>(), host.data_ptr<double>() + num_centers);
  }

 private:
  static cudaStream_t stream() { return c10::cuda::getCurrentCUDAStream(); }

  const c10::cuda::CUDAGuard guard_;  // kernels launch on the inputs' GPU
  const MergeProblem& p_;
  const int64_t pixels_;
  const at::TensorOptions options_;
  at::Tensor nearest_, pixel_max_, pixel_sum_;
};

}  // namespace
}  // namespace pdlkit

TORCH_LIBRARY_IMPL(pdlkit, CUDA, m) {
  m.impl("panoptic_merge",
         &pdlkit::panoptic_merge_on<c10::DeviceType::CUDA, &pdlkit::find_centers_cuda, pdlkit::CudaMerge>);
}

#endif  // PDL_WITH_CUDA
