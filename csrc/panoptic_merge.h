// Grouping + majority-vote panoptic merge (DESIGN.md §4.3): per-pixel arithmetic shared by the CPU
// and CUDA code, and the host-side bookkeeping both use once the per-pixel passes are done.
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

// Python-visible op: (panoptic [H, W] int32, semantic [H, W] int64, ids [K] int64, classes [K] int64,
// centers [K, 2] int64, objectness [K] f32, class_scores [K] f32, scores [K] f32).
using MergeOutputs = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                                at::Tensor, at::Tensor>;

// Validated arguments, device-independent.
struct MergeArgs {
  at::Tensor semantic;  // [C, H, W] f32 logits or [H, W] integer labels, contiguous
  at::Tensor heatmap;   // [H, W] f32, contiguous
  at::Tensor offsets;   // [2, H, W] f32, contiguous
  bool logits = false;
  int64_t height = 0, width = 0;
  int64_t num_channels = 0;  // C for logits; 0 for labels (known after the label range pass)
};

MergeArgs check_merge_args(const at::Tensor& semantic, const at::Tensor& center_heatmap,
                           const at::Tensor& offsets, at::IntArrayRef thing_ids, int64_t label_divisor,
                           int64_t void_label, double threshold, int64_t nms_kernel, int64_t top_k);

// Thing classes below num_classes, sorted and unique: index t of a class in this list is its vote
// slot, so a first-maximum over slots gives the smallest class on a tie.
std::vector<int64_t> thing_slots(at::IntArrayRef thing_ids, int64_t num_classes);

// Raises when a class id times label_divisor plus an instance id overflows int32.
void check_panoptic_range(int64_t num_classes, int64_t label_divisor, int64_t num_centers);

// Per center, from its vote counts votes[k * T + t]: its class (-1 when it owns no pixel) and its
// panoptic id (class * label_divisor + running id per class, in center order).
struct InstanceTable {
  std::vector<int64_t> class_of_center;
  std::vector<int32_t> panoptic_of_center;
  std::vector<int64_t> pixel_count;
};
InstanceTable resolve_instances(const std::vector<int64_t>& votes, int64_t num_centers,
                                const std::vector<int64_t>& thing_classes, int64_t label_divisor);

// 1 for a non-thing class whose pixel count is >= stuff_area.
std::vector<uint8_t> kept_stuff(const std::vector<int64_t>& class_area,
                                const std::vector<int64_t>& thing_classes, int64_t stuff_area);

// Per-instance outputs (CPU tensors) for the centers that own pixels, in center order.
// centers: raster indices; class_score_sums: per center sum of the class probability (ignored
// for label input, where the class score is 1).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> instance_outputs(
    const InstanceTable& table, const std::vector<CenterCandidate>& centers, int64_t width,
    const std::vector<double>& class_score_sums, bool logits);

}  // namespace pdlkit
