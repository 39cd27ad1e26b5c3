// Helpers shared by the CUDA kernels: launch geometry and host -> device copies of small tables.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

namespace pdlkit {
namespace cuda {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 4096;

// Blocks of kThreads for one thread per work item.
inline int64_t blocks_for(int64_t work) { return std::max<int64_t>(1, (work + kThreads - 1) / kThreads); }

// The same, capped at kMaxBlocks for grid-stride loops.
inline int grid_stride_blocks(int64_t work) { return static_cast<int>(std::min(kMaxBlocks, blocks_for(work))); }

// A host vector of plain values as a 1-D device tensor of `type` (whose element size must equal
// sizeof(T)), or of bytes when `type` is kByte.  The caller keeps the tensor alive while kernels use it.
template <typename T>
at::Tensor to_device(const std::vector<T>& values, at::ScalarType type, const at::Device& device) {
  const int64_t bytes = static_cast<int64_t>(values.size() * sizeof(T));
  const int64_t count = type == at::kByte ? bytes : static_cast<int64_t>(values.size());
  at::Tensor host = at::empty({count}, at::TensorOptions().dtype(type));
  if (bytes > 0) std::memcpy(host.data_ptr(), values.data(), static_cast<size_t>(bytes));
  return host.to(device);
}

// Plain structs (windows, per-segment tables) as device bytes; read them through data_as<T>().
template <typename T>
at::Tensor to_device_bytes(const std::vector<T>& values, const at::Device& device) {
  return to_device(values, at::kByte, device);
}

template <typename T>
const T* data_as(const at::Tensor& bytes) {
  return reinterpret_cast<const T*>(bytes.data_ptr());
}

}  // namespace cuda
}  // namespace pdlkit
