// Instance-center NMS (DESIGN.md §4.2): the per-pixel rules shared by the CPU and CUDA code, and the
// entry points that panoptic_merge reuses.
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

// Checks shared by both devices; returns the heatmap as [H, W] (a view of [1, H, W]).
at::Tensor check_center_nms_args(const at::Tensor& heatmap, const char* name, int64_t nms_kernel,
                                 int64_t top_k);

// A positive NMS survivor: raster index y * W + x and its heatmap value.
struct CenterCandidate {
  int64_t index;
  float score;
};

// Keeps the candidates (given in raster order) whose score is > max(kth, 0), kth being the
// k-th largest value of the suppressed map, k = min(top_k, num_pixels).  Order is preserved.
std::vector<CenterCandidate> select_top_centers(std::vector<CenterCandidate> candidates,
                                                int64_t top_k, int64_t num_pixels);

// CPU core on a contiguous [H, W] float32 buffer.  Sets *found_nan when the heatmap holds NaN.
std::vector<CenterCandidate> find_centers_cpu(const float* heatmap, int64_t height, int64_t width,
                                              float threshold, int64_t nms_kernel, int64_t top_k,
                                              bool* found_nan);

// (centers [K, 2] int64 (y, x) raster order, scores [K] float32) on the heatmap's device.
std::tuple<at::Tensor, at::Tensor> find_instance_centers_cpu(const at::Tensor& heatmap,
                                                             double threshold, int64_t nms_kernel,
                                                             int64_t top_k);
#ifdef PDL_WITH_CUDA
// CUDA core: (raster indices [K] int64, scores [K] float32) of the selected centers, in raster
// order, on the heatmap's GPU.  Raises on NaN.
std::tuple<at::Tensor, at::Tensor> find_center_indices_cuda(const at::Tensor& heatmap_2d, double threshold,
                                                            int64_t nms_kernel, int64_t top_k);
#endif

}  // namespace pdlkit
