// Instance-center NMS (semantics in docs/ops.md): the per-pixel rule shared by the CPU and CUDA
// kernels, the device-independent selection, and the host flow of the op that panoptic_merge reuses.
//
// A heatmap value v is first thresholded (v <= threshold -> -1); a pixel survives when its
// thresholded value equals the maximum of its nms_kernel x nms_kernel window (clipped at the
// border); with k = min(top_k, H * W) and kth the k-th largest value of the suppressed map, the
// centers are the survivors with value > max(kth, 0).  Only survivors > 0 can ever be kept, and kth
// is positive only when at least k of them exist, so the selection needs nothing but them.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <tuple>
#include <vector>

#ifndef PDL_HOST_DEVICE
#if defined(__CUDACC__)
#define PDL_HOST_DEVICE __host__ __device__
#else
#define PDL_HOST_DEVICE
#endif
#endif

namespace pdlkit {

// The window maximum of the thresholded map equals (m > threshold ? m : -1), m being the window
// maximum of the raw heatmap; so a pixel of value v is a positive survivor exactly when v is above
// max(threshold, 0) and equal to the raw window maximum.  Both devices take raw maxima.
PDL_HOST_DEVICE inline bool nms_positive_survivor(float value, float raw_window_max, float threshold) {
  const float lower = threshold > 0.0f ? threshold : 0.0f;
  return value > lower && value == raw_window_max;
}

// A positive NMS survivor: raster index y * W + x and its heatmap value.
struct CenterCandidate {
  int64_t index;
  float score;
};

// Checks shared by both devices (dtype, shape, parameters); returns the heatmap as [H, W] (a view
// of [1, H, W]), not yet contiguous.
at::Tensor check_center_nms_args(const at::Tensor& heatmap, const char* name, double threshold, int64_t nms_kernel,
                                 int64_t top_k);

// Keeps the candidates (given in raster order) whose score is > max(kth, 0), kth being the
// k-th largest value of the suppressed map, k = min(top_k, num_pixels).  Order is preserved.
std::vector<CenterCandidate> select_top_centers(std::vector<CenterCandidate> candidates, int64_t top_k,
                                                int64_t num_pixels);

// The device part: the centers of a contiguous [H, W] float32 heatmap, in raster order, computed on
// the heatmap's device and returned to the host.  Raises "<name> contains NaN" on NaN.
using FindCentersFn = std::vector<CenterCandidate> (*)(const at::Tensor& heatmap, float threshold, int64_t nms_kernel,
                                                       int64_t top_k, const char* name);

std::vector<CenterCandidate> find_centers_cpu(const at::Tensor& heatmap, float threshold, int64_t nms_kernel,
                                              int64_t top_k, const char* name);
#ifdef PDL_WITH_CUDA
std::vector<CenterCandidate> find_centers_cuda(const at::Tensor& heatmap, float threshold, int64_t nms_kernel,
                                               int64_t top_k, const char* name);
#endif

// The op on either device: (centers [K, 2] int64 (y, x) in raster order, scores [K] float32), on
// the heatmap's device.
std::tuple<at::Tensor, at::Tensor> find_instance_centers(const at::Tensor& heatmap, double threshold,
                                                         int64_t nms_kernel, int64_t top_k, c10::DeviceType device_type,
                                                         FindCentersFn find_centers);

// The op's entry point for one device, registered by that device's kernel file.
template <c10::DeviceType kDevice, FindCentersFn kFindCenters>
std::tuple<at::Tensor, at::Tensor> find_instance_centers_on(const at::Tensor& heatmap, double threshold,
                                                            int64_t nms_kernel, int64_t top_k) {
  return find_instance_centers(heatmap, threshold, nms_kernel, top_k, kDevice, kFindCenters);
}

}  // namespace pdlkit
