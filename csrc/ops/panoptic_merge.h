// Grouping + majority-vote panoptic merge (semantics in docs/ops.md): the per-pixel arithmetic shared
// by the CPU and CUDA kernels, and the one host flow of the op (panoptic_merge.cpp):
//
//   check -> label range -> centers -> pass 1 -> resolve instances -> pass 2 -> outputs
//
// in which only the centers and the two passes are device-specific (MergeKernels).
#pragma once

#include <ATen/ATen.h>

#include <cmath>
#include <cstdint>
#include <tuple>
#include <vector>

#include "center_nms.h"

// Device code uses the round-to-nearest intrinsics (never contracted into FMA); host code relies on
// -ffp-contract=off.
#if defined(__CUDA_ARCH__)
#define PDL_FMUL(a, b) __fmul_rn((a), (b))
#define PDL_FADD(a, b) __fadd_rn((a), (b))
#define PDL_FSUB(a, b) __fsub_rn((a), (b))
#define PDL_FSQRT(a) __fsqrt_rn(a)
#else
#define PDL_FMUL(a, b) ((a) * (b))
#define PDL_FADD(a, b) ((a) + (b))
#define PDL_FSUB(a, b) ((a) - (b))
#define PDL_FSQRT(a) std::sqrt(a)
#endif

namespace pdlkit {

// Where pixel (y, x) points: (y + offset_y) or (x + offset_x), rounded to float32.
PDL_HOST_DEVICE inline float offset_location(int64_t coordinate, float offset) {
  return PDL_FADD(static_cast<float>(coordinate), offset);
}

// d = sqrt(dy * dy + dx * dx), dy = center_y - loc_y, dx = center_x - loc_x, each step rounded
// to float32 (no fused multiply-add), exactly as the reference computes it.
PDL_HOST_DEVICE inline float center_distance(float center_y, float center_x, float loc_y, float loc_x) {
  const float dy = PDL_FSUB(center_y, loc_y);
  const float dx = PDL_FSUB(center_x, loc_x);
  return PDL_FSQRT(PDL_FADD(PDL_FMUL(dy, dy), PDL_FMUL(dx, dx)));
}

// The op's outputs: (panoptic [H, W] int32, semantic [H, W] int64, ids [K] int64, classes [K] int64,
// centers [K, 2] int64, objectness [K] f32, class_scores [K] f32, scores [K] f32).
using MergeOutputs =
    std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

// Everything the passes read, and the [H, W] outputs they write, on the input's device.
struct MergeProblem {
  at::Tensor semantic;  // [C, H, W] f32 logits or [H, W] integer labels, contiguous
  at::Tensor heatmap;   // [H, W] f32, contiguous
  at::Tensor offsets;   // [2, H, W] f32 (y, x), contiguous
  bool logits = false;
  int64_t height = 0, width = 0;
  int64_t num_classes = 0;  // C for logits; max label + 1 for labels
  int64_t label_divisor = 1, stuff_area = 0, void_label = -1;
  std::vector<CenterCandidate> centers;   // raster order
  std::vector<float> center_y, center_x;  // their coordinates, as float32
  std::vector<int64_t> thing_classes;     // sorted thing classes below num_classes: the vote slots
  std::vector<int32_t> slot_of_class;     // [max(C, 1)]: vote slot of a thing class, -1 otherwise
  at::Tensor semantic_out;                // [H, W] int64
  at::Tensor panoptic;                    // [H, W] int32

  int64_t num_centers() const { return static_cast<int64_t>(centers.size()); }
  int64_t slots() const { return static_cast<int64_t>(thing_classes.size()); }
};

// What pass 1 counts: votes[k * T + t] = pixels of thing slot t nearest to center k, and the pixel
// count of every class; plus whether it met a non-finite logit or offset.
struct VoteTotals {
  std::vector<int64_t> votes;       // [K * T]
  std::vector<int64_t> class_area;  // [max(C, 1)]
  bool bad_logits = false, bad_offsets = false;
};

// What pass 2 writes per center / class: the panoptic id of center k (when it owns pixels), its class
// (-1: none), and the panoptic value of the non-instance pixels of each class.
struct InstanceAssignment {
  std::vector<int32_t> panoptic_of_center, class_of_center, stuff_panoptic;
};

// The device-specific parts.  An implementation may keep per-pixel state between the passes.
class MergeKernels {
 public:
  virtual ~MergeKernels() = default;
  // Writes problem.semantic_out; returns the votes and class areas.
  virtual VoteTotals pass1() = 0;
  // Writes problem.panoptic; returns per center the sum of its class probability over its pixels
  // (logits only; empty for labels).
  virtual std::vector<double> pass2(const InstanceAssignment& assignment) = 0;
};

// Checks the arguments, finds the centers and allocates the outputs; thing_ids are validated here.
MergeProblem prepare_merge(const at::Tensor& semantic, const at::Tensor& center_heatmap, const at::Tensor& offsets,
                           at::IntArrayRef thing_ids, int64_t label_divisor, int64_t stuff_area, int64_t void_label,
                           double threshold, int64_t nms_kernel, int64_t top_k, c10::DeviceType device_type,
                           FindCentersFn find_centers);

// Pass 1, instance resolution, pass 2 and the per-instance outputs.
MergeOutputs run_merge(const MergeProblem& problem, MergeKernels& kernels);

// The op's entry point for one device (Kernels: its MergeKernels), registered by that device's
// kernel file.
template <c10::DeviceType kDevice, FindCentersFn kFindCenters, typename Kernels>
MergeOutputs panoptic_merge_on(const at::Tensor& semantic, const at::Tensor& center_heatmap, const at::Tensor& offsets,
                               at::IntArrayRef thing_ids, int64_t label_divisor, int64_t stuff_area, int64_t void_label,
                               double threshold, int64_t nms_kernel, int64_t top_k) {
  const MergeProblem problem = prepare_merge(semantic, center_heatmap, offsets, thing_ids, label_divisor, stuff_area,
                                             void_label, threshold, nms_kernel, top_k, kDevice, kFindCenters);
  Kernels kernels(problem);
  return run_merge(problem, kernels);
}

}  // namespace pdlkit
