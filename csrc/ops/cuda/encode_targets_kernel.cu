// Panoptic-DeepLab target encoding on CUDA: the two device passes of encode_targets' host flow.
//
//   1. pixel-parallel: id -> segment index (dense table or binary search), pixel counts and
//      coordinate sums per segment with integer atomics (exact, so the result is deterministic),
//      first per block in shared memory when the segments fit;
//   (the per-segment summary runs on the host, in the shared flow: a few hundred entries);
//   2. pixel-parallel writes of every output, then one block row per instance pasting its Gaussian
//      with atomicMax on the float bits (all values are >= 0, so integer order is float order, and
//      max does not depend on the order of the pastes).
#ifdef PDL_WITH_CUDA

#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>
#include <vector>

#include "../encode_targets.h"
#include "helpers.cuh"

namespace pdlkit {
namespace {

using cuda::data_as;
using cuda::grid_stride_blocks;
using cuda::kThreads;
using cuda::to_device_bytes;
using targets::EncodeKernels;
using targets::EncodeProblem;
using targets::InstanceWindow;
using targets::SegmentSummary;
using targets::SegmentTable;
using targets::SegmentTargets;

constexpr int64_t kMaxSharedSlots = 1024;  // 3 sums x 1024 slots x 8 bytes = 24 KiB per block

struct DeviceLookup {
  const int32_t* dense_table;  // entry id - min_id, or nullptr: binary search sorted_ids
  int64_t min_id, max_id;
  const int64_t* sorted_ids;
  const int32_t* sorted_index;
  int32_t count;    // S
  int32_t missing;  // S: "no segment"

  __device__ int32_t find(int64_t id) const {
    if (dense_table != nullptr) {
      return (id < min_id || id > max_id) ? missing : dense_table[id - min_id];
    }
    int32_t low = 0, high = count;  // first position with sorted_ids[position] >= id
    while (low < high) {
      const int32_t middle = low + (high - low) / 2;
      if (sorted_ids[middle] < id) {
        low = middle + 1;
      } else {
        high = middle;
      }
    }
    return (low < count && sorted_ids[low] == id) ? sorted_index[low] : missing;
  }
};

// sums: [3, slots] = pixel counts, sum of y, sum of x per segment (slot S: unlabelled).
template <typename id_t>
__global__ void accumulate_segments_kernel(const id_t* __restrict__ ids, int64_t num_pixels, int64_t width,
                                           DeviceLookup lookup, int32_t* __restrict__ segment_of_pixel,
                                           unsigned long long* __restrict__ sums, int64_t slots, bool block_local) {
  extern __shared__ unsigned long long block_sums[];
  if (block_local) {
    for (int64_t i = threadIdx.x; i < 3 * slots; i += blockDim.x) block_sums[i] = 0;
    __syncthreads();
  }
  unsigned long long* accumulators = block_local ? block_sums : sums;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t p = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; p < num_pixels; p += stride) {
    const int32_t s = lookup.find(static_cast<int64_t>(ids[p]));
    segment_of_pixel[p] = s;
    const int64_t y = p / width;
    const int64_t x = p - y * width;
    atomicAdd(accumulators + s, 1ULL);
    atomicAdd(accumulators + slots + s, static_cast<unsigned long long>(y));
    atomicAdd(accumulators + 2 * slots + s, static_cast<unsigned long long>(x));
  }
  if (block_local) {
    __syncthreads();
    for (int64_t i = threadIdx.x; i < 3 * slots; i += blockDim.x) {
      if (block_sums[i] != 0) atomicAdd(sums + i, block_sums[i]);
    }
  }
}

__global__ void write_targets_kernel(const int32_t* __restrict__ segment_of_pixel, int64_t num_pixels, int64_t width,
                                     const SegmentTargets* __restrict__ segment_targets, int64_t* __restrict__ semantic,
                                     float* __restrict__ center, float* __restrict__ offset_y,
                                     float* __restrict__ offset_x, float* __restrict__ semantic_weights,
                                     float* __restrict__ center_weights, float* __restrict__ offset_weights) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t p = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; p < num_pixels; p += stride) {
    const SegmentTargets& t = segment_targets[segment_of_pixel[p]];
    const int64_t y = p / width;
    const int64_t x = p - y * width;
    semantic[p] = t.semantic;
    semantic_weights[p] = t.semantic_weight;
    center_weights[p] = t.center_weight;
    offset_weights[p] = t.offset_weight;
    offset_y[p] = t.has_offset ? targets::offset_to_center(t.center_y, y) : 0.f;
    offset_x[p] = t.has_offset ? targets::offset_to_center(t.center_x, x) : 0.f;
    center[p] = 0.f;
  }
}

// blockIdx.y (strided) picks the instance, the x dimension strides over its clipped window's cells.
__global__ void paste_gaussians_kernel(const InstanceWindow* __restrict__ windows, int64_t count, double mid,
                                       double two_sigma_sq, int64_t width, float* __restrict__ center) {
  for (int64_t k = blockIdx.y; k < count; k += gridDim.y) {
    const InstanceWindow window = windows[k];
    const int64_t columns = window.col_end - window.col_begin;
    const int64_t cells = (window.row_end - window.row_begin) * columns;
    for (int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; c < cells;
         c += static_cast<int64_t>(gridDim.x) * blockDim.x) {
      const int64_t y = window.row_begin + c / columns;
      const int64_t x = window.col_begin + c % columns;
      const float value = static_cast<float>(targets::gaussian_cell(
          static_cast<double>(y - window.top), static_cast<double>(x - window.left), mid, two_sigma_sq));
      atomicMax(reinterpret_cast<int*>(center + y * width + x), __float_as_int(value));
    }
  }
}

// The id -> segment lookup on the device; the tensors it points into live as long as this object.
class DeviceSegmentLookup {
 public:
  DeviceSegmentLookup(const SegmentTable& table, const at::Device& device) {
    lookup_.count = static_cast<int32_t>(table.size());
    lookup_.missing = static_cast<int32_t>(table.size());
    if (table.dense()) {
      dense_table_ = to_device_bytes(table.dense_table(), device);
      lookup_.dense_table = data_as<int32_t>(dense_table_);
      lookup_.min_id = table.sorted.front().first;
      lookup_.max_id = table.sorted.back().first;
      return;
    }
    std::vector<int64_t> ids;
    std::vector<int32_t> index;
    for (const auto& entry : table.sorted) {
      ids.push_back(entry.first);
      index.push_back(entry.second);
    }
    sorted_ids_ = to_device_bytes(ids, device);
    sorted_index_ = to_device_bytes(index, device);
    lookup_.sorted_ids = data_as<int64_t>(sorted_ids_);
    lookup_.sorted_index = data_as<int32_t>(sorted_index_);
  }
  const DeviceLookup& get() const { return lookup_; }

 private:
  DeviceLookup lookup_{};
  at::Tensor dense_table_, sorted_ids_, sorted_index_;
};

class CudaEncoder final : public EncodeKernels {
 public:
  explicit CudaEncoder(const EncodeProblem& problem)
      : guard_(problem.panoptic.device()),
        p_(problem),
        lookup_(problem.table, problem.panoptic.device()),
        segment_of_pixel_(at::empty({problem.height * problem.width}, problem.panoptic.options().dtype(at::kInt))) {}

  std::vector<int64_t> accumulate() override {
    const int64_t pixels = p_.height * p_.width, slots = p_.table.size() + 1;
    at::Tensor sums = at::zeros({3 * slots}, p_.panoptic.options().dtype(at::kLong));
    if (pixels > 0) {
      const bool block_local = slots <= kMaxSharedSlots;
      const size_t shared_bytes = block_local ? 3 * slots * sizeof(unsigned long long) : 0;
      AT_DISPATCH_INDEX_TYPES(p_.panoptic.scalar_type(), "encode_targets_cuda", [&] {
        accumulate_segments_kernel<index_t><<<grid_stride_blocks(pixels), kThreads, shared_bytes, stream()>>>(
            p_.panoptic.data_ptr<index_t>(), pixels, p_.width, lookup_.get(), segment_of_pixel_.data_ptr<int32_t>(),
            reinterpret_cast<unsigned long long*>(sums.data_ptr<int64_t>()), slots, block_local);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
    }
    const at::Tensor host = sums.cpu();  // synchronises: the summary needs the totals
    return std::vector<int64_t>(host.data_ptr<int64_t>(), host.data_ptr<int64_t>() + host.numel());
  }

  void write(const SegmentSummary& summary, const std::vector<InstanceWindow>& windows) override {
    const int64_t pixels = p_.height * p_.width;
    if (pixels == 0) return;
    const at::Tensor device_targets = to_device_bytes(summary.targets, p_.panoptic.device());
    float* offset = p_.offset.data_ptr<float>();
    write_targets_kernel<<<grid_stride_blocks(pixels), kThreads, 0, stream()>>>(
        segment_of_pixel_.data_ptr<int32_t>(), pixels, p_.width, data_as<SegmentTargets>(device_targets),
        p_.semantic.data_ptr<int64_t>(), p_.center.data_ptr<float>(), offset, offset + pixels,
        p_.semantic_weights.data_ptr<float>(), p_.center_weights.data_ptr<float>(),
        p_.offset_weights.data_ptr<float>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    if (!windows.empty()) paste(windows);
  }

 private:
  static cudaStream_t stream() { return c10::cuda::getCurrentCUDAStream(); }

  void paste(const std::vector<InstanceWindow>& windows) {
    const at::Tensor device_windows = to_device_bytes(windows, p_.panoptic.device());
    int64_t largest_window = 0;
    for (const InstanceWindow& w : windows)
      largest_window = std::max(largest_window, (w.row_end - w.row_begin) * (w.col_end - w.col_begin));
    const dim3 grid(static_cast<unsigned>(std::min<int64_t>(grid_stride_blocks(largest_window), 64)),
                    static_cast<unsigned>(std::min<int64_t>(static_cast<int64_t>(windows.size()), 65535)));
    const double sigma = p_.params.sigma;
    paste_gaussians_kernel<<<grid, kThreads, 0, stream()>>>(data_as<InstanceWindow>(device_windows),
                                                            static_cast<int64_t>(windows.size()), 3 * sigma + 1,
                                                            2 * (sigma * sigma), p_.width, p_.center.data_ptr<float>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }

  const c10::cuda::CUDAGuard guard_;  // kernels launch on the inputs' GPU
  const EncodeProblem& p_;
  DeviceSegmentLookup lookup_;
  at::Tensor segment_of_pixel_;
};

}  // namespace
}  // namespace pdlkit

TORCH_LIBRARY_IMPL(pdlkit, CUDA, m) {
  m.impl("encode_targets", &pdlkit::targets::encode_targets_on<c10::DeviceType::CUDA, pdlkit::CudaEncoder>);
}

#endif  // PDL_WITH_CUDA
