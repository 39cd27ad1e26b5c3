// Panoptic-DeepLab target encoding on CUDA (DESIGN.md §4.1), the CUDA kernel of
// torch.ops.pdlkit.encode_targets (schema in encode_targets_cpu.cpp).
//
//   1. pixel-parallel: id -> segment index (dense table or binary search), pixel counts and
//      coordinate sums per segment with integer atomics (exact, so the result is deterministic),
//      first per block in shared memory when the segments fit;
//   2. the per-segment summary on the host (the same code as the CPU path, a few hundred entries);
//   3. pixel-parallel writes of every output, then one block row per instance pasting its Gaussian
//      with atomicMax on the float bits (all values are >= 0, so integer order is float order, and
//      max does not depend on the order of the pastes).
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>
#include <tuple>
#include <vector>

#include "checks.h"
#include "encode_targets.h"

namespace pdlkit {
namespace {

using targets::EncodeParams;
using targets::InstanceWindow;
using targets::SegmentSummary;
using targets::SegmentTable;
using targets::SegmentTargets;

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 4096;
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

int blocks_for(int64_t work) {
  return static_cast<int>(std::max<int64_t>(1, std::min(kMaxBlocks, (work + kThreads - 1) / kThreads)));
}

// sums: [3, slots] = pixel counts, sum of y, sum of x per segment (slot S: unlabelled).
template <typename id_t>
__global__ void accumulate_segments_kernel(const id_t* __restrict__ ids, int64_t num_pixels,
                                           int64_t width, DeviceLookup lookup,
                                           int32_t* __restrict__ segment_of_pixel,
                                           unsigned long long* __restrict__ sums, int64_t slots,
                                           bool block_local) {
  extern __shared__ unsigned long long block_sums[];
  if (block_local) {
    for (int64_t i = threadIdx.x; i < 3 * slots; i += blockDim.x) block_sums[i] = 0;
    __syncthreads();
  }
  unsigned long long* accumulators = block_local ? block_sums : sums;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t p = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; p < num_pixels;
       p += stride) {
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

__global__ void write_targets_kernel(const int32_t* __restrict__ segment_of_pixel, int64_t num_pixels,
                                     int64_t width, const SegmentTargets* __restrict__ segment_targets,
                                     int64_t* __restrict__ semantic, float* __restrict__ center,
                                     float* __restrict__ offset_y, float* __restrict__ offset_x,
                                     float* __restrict__ semantic_weights,
                                     float* __restrict__ center_weights,
                                     float* __restrict__ offset_weights) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t p = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; p < num_pixels;
       p += stride) {
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
__global__ void paste_gaussians_kernel(const InstanceWindow* __restrict__ windows, int64_t count,
                                       double mid, double two_sigma_sq, int64_t width,
                                       float* __restrict__ center) {
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

// Copies a host vector of plain structs to a device byte tensor (kept alive by the caller).
template <typename T>
at::Tensor to_device_bytes(const std::vector<T>& values, const at::Device& device) {
  at::Tensor host = at::empty({static_cast<int64_t>(values.size() * sizeof(T))}, at::kByte);
  if (!values.empty()) std::memcpy(host.data_ptr(), values.data(), values.size() * sizeof(T));
  return host.to(device);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
encode_targets_cuda(const at::Tensor& panoptic_in, const at::Tensor& segments_in, double sigma,
                    int64_t ignore_label, int64_t small_instance_area, double small_instance_weight,
                    bool ignore_stuff_in_offset, bool ignore_crowd_in_semantic) {
  const EncodeParams params = targets::check_arguments(
      panoptic_in, segments_in, c10::DeviceType::CUDA, sigma, ignore_label, small_instance_area,
      small_instance_weight, ignore_stuff_in_offset, ignore_crowd_in_semantic);
  const c10::cuda::CUDAGuard device_guard(panoptic_in.device());
  const at::Device device = panoptic_in.device();
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();

  const at::Tensor panoptic = contiguous(panoptic_in);
  const SegmentTable table(segments_in.to(at::kCPU, at::kLong).contiguous(), ignore_label);
  const int64_t height = panoptic.size(0), width = panoptic.size(1);
  const int64_t num_pixels = height * width;
  const int64_t slots = table.size() + 1;

  DeviceLookup lookup{};
  lookup.count = static_cast<int32_t>(table.size());
  lookup.missing = static_cast<int32_t>(table.size());
  at::Tensor dense_table, sorted_ids, sorted_index;  // device copies, alive until the kernels ran
  if (table.dense()) {
    dense_table = to_device_bytes(table.dense_table(), device);
    lookup.dense_table = reinterpret_cast<const int32_t*>(dense_table.data_ptr());
    lookup.min_id = table.sorted.front().first;
    lookup.max_id = table.sorted.back().first;
  } else {
    std::vector<int64_t> ids;
    std::vector<int32_t> index;
    for (const auto& entry : table.sorted) {
      ids.push_back(entry.first);
      index.push_back(entry.second);
    }
    sorted_ids = to_device_bytes(ids, device);
    sorted_index = to_device_bytes(index, device);
    lookup.sorted_ids = reinterpret_cast<const int64_t*>(sorted_ids.data_ptr());
    lookup.sorted_index = reinterpret_cast<const int32_t*>(sorted_index.data_ptr());
  }

  const auto float_options = panoptic.options().dtype(at::kFloat);
  at::Tensor semantic = at::empty({height, width}, panoptic.options().dtype(at::kLong));
  at::Tensor center = at::empty({height, width}, float_options);
  at::Tensor offset = at::empty({2, height, width}, float_options);
  at::Tensor semantic_weights = at::empty({height, width}, float_options);
  at::Tensor center_weights = at::empty({height, width}, float_options);
  at::Tensor offset_weights = at::empty({height, width}, float_options);
  at::Tensor segment_of_pixel = at::empty({num_pixels}, panoptic.options().dtype(at::kInt));
  at::Tensor sums = at::zeros({3 * slots}, panoptic.options().dtype(at::kLong));

  if (num_pixels > 0) {
    const bool block_local = slots <= kMaxSharedSlots;
    const size_t shared_bytes = block_local ? 3 * slots * sizeof(unsigned long long) : 0;
    AT_DISPATCH_INDEX_TYPES(panoptic.scalar_type(), "encode_targets_cuda", [&] {
      accumulate_segments_kernel<index_t><<<blocks_for(num_pixels), kThreads, shared_bytes, stream>>>(
          panoptic.data_ptr<index_t>(), num_pixels, width, lookup, segment_of_pixel.data_ptr<int32_t>(),
          reinterpret_cast<unsigned long long*>(sums.data_ptr<int64_t>()), slots, block_local);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
  const at::Tensor host_sums = sums.cpu();  // synchronises: the summary needs the totals
  const int64_t* totals = host_sums.data_ptr<int64_t>();
  const SegmentSummary summary =
      targets::summarize_segments(table, totals, totals + slots, totals + 2 * slots, params);

  const int64_t num_instances = static_cast<int64_t>(summary.instance_centers.size() / 2);
  at::Tensor host_points = at::empty({num_instances, 2}, at::kFloat);
  std::vector<InstanceWindow> windows;
  for (int64_t k = 0; k < num_instances; ++k) {
    const double center_y = summary.instance_centers[2 * k];
    const double center_x = summary.instance_centers[2 * k + 1];
    host_points.data_ptr<float>()[2 * k] = static_cast<float>(center_y);
    host_points.data_ptr<float>()[2 * k + 1] = static_cast<float>(center_x);
    InstanceWindow window;
    if (targets::instance_window(center_y, center_x, sigma, height, width, &window)) {
      windows.push_back(window);
    }
  }
  at::Tensor center_points = host_points.to(device);

  if (num_pixels > 0) {
    const at::Tensor device_targets = to_device_bytes(summary.targets, device);
    float* offset_data = offset.data_ptr<float>();
    write_targets_kernel<<<blocks_for(num_pixels), kThreads, 0, stream>>>(
        segment_of_pixel.data_ptr<int32_t>(), num_pixels, width,
        reinterpret_cast<const SegmentTargets*>(device_targets.data_ptr()), semantic.data_ptr<int64_t>(),
        center.data_ptr<float>(), offset_data, offset_data + num_pixels,
        semantic_weights.data_ptr<float>(), center_weights.data_ptr<float>(),
        offset_weights.data_ptr<float>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    if (!windows.empty()) {
      const at::Tensor device_windows = to_device_bytes(windows, device);
      int64_t largest_window = 0;
      for (const InstanceWindow& w : windows) {
        largest_window = std::max(largest_window, (w.row_end - w.row_begin) * (w.col_end - w.col_begin));
      }
      const dim3 grid(static_cast<unsigned>(std::min<int64_t>(blocks_for(largest_window), 64)),
                      static_cast<unsigned>(std::min<int64_t>(static_cast<int64_t>(windows.size()), 65535)));
      paste_gaussians_kernel<<<grid, kThreads, 0, stream>>>(
          reinterpret_cast<const InstanceWindow*>(device_windows.data_ptr()),
          static_cast<int64_t>(windows.size()), 3 * sigma + 1, 2 * (sigma * sigma), width,
          center.data_ptr<float>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  }
  return {semantic, center, center_points, offset, semantic_weights, center_weights, offset_weights};
}

}  // namespace
}  // namespace pdlkit

TORCH_LIBRARY_IMPL(pdlkit, CUDA, m) { m.impl("encode_targets", &pdlkit::encode_targets_cuda); }
