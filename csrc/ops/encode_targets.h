// Panoptic-DeepLab target encoding (semantics in docs/ops.md): the per-pixel formulas shared by the
// CPU and CUDA kernels (__host__ __device__ inline functions), and the device-independent host flow
// of the op (encode_targets.cpp): check -> segment table -> pass 1 (device: pixel counts and
// coordinate sums) -> per-segment summary and instance windows -> pass 2 (device: every output).
//
// Numerics follow detectron2's PanopticDeepLabTargetGenerator: mass centers and offsets in float64
// (then stored as float32), centers rounded half to even, the Gaussian computed in float64.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <tuple>
#include <utility>
#include <vector>

#if defined(__CUDACC__)
#define PDL_TARGETS_HD __host__ __device__
#else
#define PDL_TARGETS_HD
#endif

namespace pdlkit {
namespace targets {

// Columns of `segments` [S, 4].
constexpr int kSegmentId = 0;
constexpr int kTrainId = 1;
constexpr int kIsThing = 2;
constexpr int kIsCrowd = 3;

// What every pixel of one segment receives.  Index S of the table is the "unlabelled" entry used for
// pixels whose id is in no segment, so the per-pixel loops have no special case.
struct SegmentTargets {
  int64_t semantic;       // train id, or ignore_label (unlabelled, or crowd when ignored)
  float semantic_weight;  // small_instance_weight for small things, else 1
  float center_weight;    // 1 on non-crowd segments
  float offset_weight;    // 1 on non-crowd segments (things only when ignore_stuff_in_offset)
  int32_t has_offset;     // thing segment with >= 1 pixel: offsets point to its mass center
  double center_y;        // mass center (mean y, mean x); meaningful when has_offset
  double center_x;
};

// The clipped (6σ+3)² Gaussian window of one instance: image rows [row_begin, row_end) and columns
// [col_begin, col_end); window cell (i, j) sits at image pixel (top + i, left + j).
struct InstanceWindow {
  int64_t row_begin, row_end, col_begin, col_end;
  int64_t top, left;
};

// np.round / Python round: half to even (the default floating-point rounding mode).
PDL_TARGETS_HD inline double round_half_even(double value) { return rint(value); }

// Cell (i, j) of the Gaussian window: exp(-((j - mid)² + (i - mid)²) / (2σ²)), mid = 3σ + 1.
PDL_TARGETS_HD inline double gaussian_cell(double i, double j, double mid, double two_sigma_sq) {
  const double dx = j - mid;
  const double dy = i - mid;
  return exp(-(dx * dx + dy * dy) / two_sigma_sq);
}

// Offset from pixel coordinate to mass center, computed in float64 and stored as float32.
PDL_TARGETS_HD inline float offset_to_center(double center, int64_t coordinate) {
  return static_cast<float>(center - static_cast<double>(coordinate));
}

// ---- host-only -------------------------------------------------------------------------------

struct EncodeParams {
  double sigma;
  int64_t ignore_label;
  int64_t small_instance_area;
  double small_instance_weight;
  bool ignore_stuff_in_offset;
  bool ignore_crowd_in_semantic;
};

// sigma outside [kMinSigma, kMaxSigma] pixels is refused (as by the Python checks): below, 2σ²
// underflows in float64 (0 / 0 at the window's middle); above, the window's coordinates (~3σ) stop
// being exact float64 integers.  Either would make the result depend on evaluation details.
constexpr double kMinSigma = 1e-6;
constexpr double kMaxSigma = 1e12;

// `segments` as plain host arrays, validated: unique ids, train ids in 0..255 and not ignore_label,
// is_thing / iscrowd in {0, 1}.  `segments_cpu` is [S, 4] int64, contiguous, on the CPU.
struct SegmentTable {
  std::vector<int64_t> ids, train_ids;
  std::vector<uint8_t> is_thing, is_crowd;
  std::vector<std::pair<int64_t, int32_t>> sorted;  // (id, segment index), ascending id

  SegmentTable(const at::Tensor& segments_cpu, int64_t ignore_label);
  int64_t size() const { return static_cast<int64_t>(ids.size()); }

  // A dense id -> index table pays off when the ids span a small range (Cityscapes: 0..33999);
  // otherwise (COCO's R + 256·G + 256²·B ids) lookups binary-search `sorted`.
  static constexpr uint64_t kMaxDenseRange = uint64_t{1} << 18;
  bool dense() const;
  // dense(): entry k is the segment index of id min_id + k, or S when no segment has that id.
  std::vector<int32_t> dense_table() const;
};

// Per-segment targets plus the unlabelled entry at index S.  Thing segments with >= 1 pixel, crowd
// included, become instances (in segment order) with their mass centers.
struct SegmentSummary {
  std::vector<SegmentTargets> targets;   // S + 1 entries
  std::vector<double> instance_centers;  // K * 2 doubles, (y, x)
};

// The op's outputs: (semantic, center, center_points, offset, semantic_weights, center_weights,
// offset_weights).
using TargetOutputs = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

// Validated inputs and the allocated [H, W] outputs, on the input's device.
struct EncodeProblem {
  at::Tensor panoptic;  // [H, W] int32/int64, contiguous
  EncodeParams params;
  SegmentTable table;
  int64_t height = 0, width = 0;
  at::Tensor semantic, center, offset, semantic_weights, center_weights, offset_weights;
};

// The two device-specific passes.  An implementation may keep per-pixel state between them.
class EncodeKernels {
 public:
  virtual ~EncodeKernels() = default;
  // Pixel counts, coordinate sums of y and of x per segment: 3 * (S + 1) values (slot S: unlabelled).
  virtual std::vector<int64_t> accumulate() = 0;
  // Writes every output of `problem`; `windows` are the instances' clipped Gaussian windows.
  virtual void write(const SegmentSummary& summary, const std::vector<InstanceWindow>& windows) = 0;
};

EncodeProblem prepare_encode(const at::Tensor& panoptic, const at::Tensor& segments, c10::DeviceType device_type,
                             const EncodeParams& params);
TargetOutputs run_encode(const EncodeProblem& problem, EncodeKernels& kernels);

// The op's entry point for one device (Kernels: its EncodeKernels), registered by that device's
// kernel file.
template <c10::DeviceType kDevice, typename Kernels>
TargetOutputs encode_targets_on(const at::Tensor& panoptic, const at::Tensor& segments, double sigma,
                                int64_t ignore_label, int64_t small_instance_area, double small_instance_weight,
                                bool ignore_stuff_in_offset, bool ignore_crowd_in_semantic) {
  const EncodeProblem problem = prepare_encode(panoptic, segments, kDevice,
                                               {sigma, ignore_label, small_instance_area, small_instance_weight,
                                                ignore_stuff_in_offset, ignore_crowd_in_semantic});
  Kernels kernels(problem);
  return run_encode(problem, kernels);
}

}  // namespace targets
}  // namespace pdlkit
