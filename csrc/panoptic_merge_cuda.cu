// Grouping + panoptic merge on CUDA, one thread per pixel in two kernels:
//
//   pass 1  argmax over the logit planes (coalesced per plane) and, for thing pixels, the softmax
//           max and denominator; nearest center with the centers staged in shared memory; class
//           votes and class areas counted with warp-aggregated atomics;
//   host    instance classes and ids, kept stuff (the same code as the CPU op);
//   pass 2  the panoptic map and each instance's class-probability sum (block-level shared
//           accumulators, one global atomic per instance and block).
#ifdef PDL_WITH_CUDA

#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "checks.h"
#include "panoptic_merge.h"

namespace pdlkit {
namespace {

constexpr int kThreads = 256;
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
                                   int64_t num_classes, const float* __restrict__ offsets,
                                   int64_t height, int64_t width, const int* __restrict__ slot_of_class,
                                   int64_t slots, const float* __restrict__ center_y,
                                   const float* __restrict__ center_x, int64_t num_centers,
                                   int64_t* __restrict__ semantic, int32_t* __restrict__ nearest_center,
                                   float* __restrict__ pixel_max, float* __restrict__ pixel_sum,
                                   unsigned long long* __restrict__ votes,
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
                                   const int64_t* __restrict__ semantic,
                                   const int32_t* __restrict__ nearest_center, int64_t num_centers,
                                   const int32_t* __restrict__ panoptic_of_center,
                                   const int32_t* __restrict__ class_of_center,
                                   const int32_t* __restrict__ stuff_panoptic,
                                   const float* __restrict__ pixel_max, const float* __restrict__ pixel_sum,
                                   int32_t* __restrict__ panoptic, double* __restrict__ class_score_sums) {
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

template <typename T>
at::Tensor to_device(const std::vector<T>& values, at::ScalarType type, const at::Device& device) {
  at::Tensor host = at::empty({static_cast<int64_t>(values.size())}, at::TensorOptions().dtype(type));
  if (!values.empty()) std::memcpy(host.data_ptr(), values.data(), values.size() * sizeof(T));
  return host.to(device);
}

MergeOutputs panoptic_merge_cuda(const at::Tensor& semantic_in, const at::Tensor& center_heatmap,
                                 const at::Tensor& offsets_in, at::IntArrayRef thing_ids,
                                 int64_t label_divisor, int64_t stuff_area, int64_t void_label,
                                 double threshold, int64_t nms_kernel, int64_t top_k) {
  MergeArgs args = check_merge_args(semantic_in, center_heatmap, offsets_in, thing_ids, label_divisor,
                                    void_label, threshold, nms_kernel, top_k);
  check_device_type(args.semantic, c10::DeviceType::CUDA, "semantic");
  const c10::cuda::CUDAGuard guard(args.semantic.device());
  const at::Device device = args.semantic.device();
  const int64_t height = args.height, width = args.width, pixels = height * width;
  const bool logits = args.logits;

  at::Tensor labels_in;
  int64_t num_classes = args.num_channels;
  if (!logits) {
    labels_in = args.semantic.to(at::kLong).contiguous();
    num_classes = 0;
    if (pixels > 0) {
      auto [low_t, high_t] = at::aminmax(labels_in);
      const int64_t low = low_t.item<int64_t>(), high = high_t.item<int64_t>();
      TORCH_CHECK(low >= 0 && high < label_divisor, "semantic labels must lie in [0, label_divisor=",
                  label_divisor, "), got values in [", low, ", ", high, "]");
      num_classes = high + 1;
    }
  }

  auto [center_index_d, center_score_d] = find_center_indices_cuda(args.heatmap, threshold, nms_kernel, top_k);
  const at::Tensor center_index = center_index_d.cpu(), center_score = center_score_d.cpu();
  const int64_t num_centers = center_index.size(0);
  check_panoptic_range(num_classes, label_divisor, num_centers);
  std::vector<CenterCandidate> centers(num_centers);
  std::vector<float> center_y(num_centers), center_x(num_centers);
  for (int64_t k = 0; k < num_centers; ++k) {
    centers[k] = {center_index.data_ptr<int64_t>()[k], center_score.data_ptr<float>()[k]};
    center_y[k] = static_cast<float>(centers[k].index / width);
    center_x[k] = static_cast<float>(centers[k].index % width);
  }
  const std::vector<int64_t> thing_classes = thing_slots(thing_ids, num_classes);
  const int64_t slots = static_cast<int64_t>(thing_classes.size());
  std::vector<int32_t> slot_of_class(std::max<int64_t>(num_classes, 1), -1);
  for (int64_t t = 0; t < slots; ++t) slot_of_class[thing_classes[t]] = static_cast<int32_t>(t);

  const auto options = args.semantic.options();
  at::Tensor semantic = at::empty({height, width}, options.dtype(at::kLong));
  at::Tensor panoptic = at::empty({height, width}, options.dtype(at::kInt));
  at::Tensor nearest = at::empty({num_centers > 0 ? pixels : 0}, options.dtype(at::kInt));
  at::Tensor pixel_max = at::empty({logits && num_centers > 0 ? pixels : 0}, options.dtype(at::kFloat));
  at::Tensor pixel_sum = at::empty_like(pixel_max);
  at::Tensor votes = at::zeros({std::max<int64_t>(num_centers * slots, 1)}, options.dtype(at::kLong));
  at::Tensor class_area = at::zeros({std::max<int64_t>(num_classes, 1)}, options.dtype(at::kLong));
  at::Tensor bad_input = at::zeros({2}, options.dtype(at::kInt));
  const at::Tensor slot_of_class_d = to_device(slot_of_class, at::kInt, device);
  const at::Tensor center_y_d = to_device(center_y, at::kFloat, device);
  const at::Tensor center_x_d = to_device(center_x, at::kFloat, device);
  const int64_t blocks = std::max<int64_t>((pixels + kThreads - 1) / kThreads, 1);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();

  if (pixels > 0) {
    merge_pass1_kernel<<<blocks, kThreads, 0, stream>>>(
        logits ? args.semantic.data_ptr<float>() : nullptr, logits ? nullptr : labels_in.data_ptr<int64_t>(),
        num_classes, args.offsets.data_ptr<float>(), height, width, slot_of_class_d.data_ptr<int>(), slots,
        center_y_d.data_ptr<float>(), center_x_d.data_ptr<float>(), num_centers, semantic.data_ptr<int64_t>(),
        nearest.data_ptr<int32_t>(), pixel_max.data_ptr<float>(), pixel_sum.data_ptr<float>(),
        reinterpret_cast<unsigned long long*>(votes.data_ptr<int64_t>()),
        reinterpret_cast<unsigned long long*>(class_area.data_ptr<int64_t>()), bad_input.data_ptr<int>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  const at::Tensor bad_host = bad_input.cpu();
  TORCH_CHECK(bad_host.data_ptr<int>()[0] == 0, "semantic logits contain NaN or infinity");
  TORCH_CHECK(bad_host.data_ptr<int>()[1] == 0, "offsets contain NaN or infinity");
  const at::Tensor votes_host = votes.cpu(), area_host = class_area.cpu();
  const std::vector<int64_t> vote_counts(votes_host.data_ptr<int64_t>(),
                                         votes_host.data_ptr<int64_t>() + num_centers * slots);
  const std::vector<int64_t> areas(area_host.data_ptr<int64_t>(), area_host.data_ptr<int64_t>() + area_host.numel());

  const InstanceTable table = resolve_instances(vote_counts, num_centers, thing_classes, label_divisor);
  const std::vector<uint8_t> stuff = kept_stuff(areas, thing_classes, stuff_area);
  std::vector<int32_t> stuff_panoptic(stuff.size()), class_of_center(num_centers);
  for (size_t c = 0; c < stuff.size(); ++c)
    stuff_panoptic[c] = stuff[c] ? static_cast<int32_t>(static_cast<int64_t>(c) * label_divisor)
                                 : static_cast<int32_t>(void_label);
  for (int64_t k = 0; k < num_centers; ++k) class_of_center[k] = static_cast<int32_t>(table.class_of_center[k]);
  const at::Tensor panoptic_of_center_d = to_device(table.panoptic_of_center, at::kInt, device);
  const at::Tensor class_of_center_d = to_device(class_of_center, at::kInt, device);
  const at::Tensor stuff_panoptic_d = to_device(stuff_panoptic, at::kInt, device);
  at::Tensor class_score_sums = at::zeros({std::max<int64_t>(num_centers, 1)}, options.dtype(at::kDouble));
  if (pixels > 0) {
    merge_pass2_kernel<<<blocks, kThreads, 0, stream>>>(
        logits ? args.semantic.data_ptr<float>() : nullptr, pixels, semantic.data_ptr<int64_t>(),
        nearest.data_ptr<int32_t>(), num_centers, panoptic_of_center_d.data_ptr<int32_t>(),
        class_of_center_d.data_ptr<int32_t>(), stuff_panoptic_d.data_ptr<int32_t>(),
        pixel_max.data_ptr<float>(), pixel_sum.data_ptr<float>(), panoptic.data_ptr<int32_t>(),
        class_score_sums.data_ptr<double>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  const at::Tensor sums_host = class_score_sums.cpu();
  const std::vector<double> sums(sums_host.data_ptr<double>(), sums_host.data_ptr<double>() + num_centers);
  auto instances = instance_outputs(table, centers, std::max<int64_t>(width, 1), sums, logits);
  return {panoptic,
          semantic,
          std::get<0>(instances).to(device),
          std::get<1>(instances).to(device),
          std::get<2>(instances).to(device),
          std::get<3>(instances).to(device),
          std::get<4>(instances).to(device),
          std::get<5>(instances).to(device)};
}

}  // namespace
}  // namespace pdlkit

TORCH_LIBRARY_IMPL(pdlkit, CUDA, m) {
  m.impl("panoptic_merge", &pdlkit::panoptic_merge_cuda);
}

#endif  // PDL_WITH_CUDA
