// Argument checks shared by every op at the Python/C++ boundary.  Each failure is a c10::ValueError
// (a c10::Error; ValueError in Python, as the pure-torch references raise) whose message names the
// argument and what was expected.  The ops use TORCH_CHECK_VALUE for every input check.
#pragma once

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <string>

namespace pdlkit {

inline void check_defined(const at::Tensor& t, const char* name) {
  TORCH_CHECK_VALUE(t.defined(), name, " must be a tensor, got an undefined tensor");
}

inline void check_dim(const at::Tensor& t, int64_t dim, const char* name, const char* layout) {
  check_defined(t, name);
  TORCH_CHECK_VALUE(t.dim() == dim, name, " must be ", dim, "-D ", layout, ", got shape ", t.sizes());
}

inline void check_floating(const at::Tensor& t, const char* name) {
  TORCH_CHECK_VALUE(t.scalar_type() == at::kFloat, name, " must be float32, got ", t.scalar_type());
}

inline void check_integral(const at::Tensor& t, const char* name) {
  TORCH_CHECK_VALUE(t.scalar_type() == at::kInt || t.scalar_type() == at::kLong, name, " must be int32 or int64, got ",
                    t.scalar_type());
}

inline void check_same_device(const at::Tensor& a, const char* a_name, const at::Tensor& b, const char* b_name) {
  TORCH_CHECK_VALUE(a.device() == b.device(), a_name, " (on ", a.device(), ") and ", b_name, " (on ", b.device(),
                    ") must be on the same device");
}

inline void check_device_type(const at::Tensor& t, c10::DeviceType type, const char* name) {
  TORCH_CHECK_VALUE(t.device().type() == type, name, " must be on ", c10::DeviceTypeName(type), ", got ", t.device());
}

inline void check_size(const at::Tensor& t, int64_t dim, int64_t expected, const char* name, const char* what) {
  TORCH_CHECK_VALUE(t.size(dim) == expected, name, " has ", t.size(dim), " ", what, ", expected ", expected, " (shape ",
                    t.sizes(), ")");
}

// Kernels read row-major memory: any layout (channels-last, transposed views) is accepted and
// copied to a contiguous tensor here rather than rejected.
inline at::Tensor contiguous(const at::Tensor& t) { return t.is_contiguous() ? t : t.contiguous(); }

}  // namespace pdlkit
