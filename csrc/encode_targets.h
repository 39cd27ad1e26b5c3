// Panoptic-DeepLab target encoding (DESIGN.md §4.1): the arithmetic shared by the CPU and CUDA
// implementations.  Per-pixel formulas are __host__ __device__ inline functions; the host-only part
// (checking `segments`, the id -> segment lookup, per-segment summaries, instance windows) is
// compiled by both the C++ compiler and nvcc's host pass so both devices use exactly the same code.
//
// Numerics follow detectron2's PanopticDeepLabTargetGenerator: mass centers and offsets in float64
// (then stored as float32), centers rounded half to even, the Gaussian computed in float64.
#pragma once

#include <ATen/ATen.h>
#include "checks.h"
#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
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
  int64_t semantic;        // train id, or ignore_label (unlabelled, or crowd when ignored)
  float semantic_weight;   // small_instance_weight for small things, else 1
  float center_weight;     // 1 on non-crowd segments
  float offset_weight;     // 1 on non-crowd segments (things only when ignore_stuff_in_offset)
  int32_t has_offset;      // thing segment with >= 1 pixel: offsets point to its mass center
  double center_y;         // mass center (mean y, mean x); meaningful when has_offset
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

// ---- host-only helpers ------------------------------------------------------------------------

struct EncodeParams {
  double sigma;
  int64_t ignore_label;
  int64_t small_instance_area;
  double small_instance_weight;
  bool ignore_stuff_in_offset;
  bool ignore_crowd_in_semantic;
};

inline void check_params(const EncodeParams& p) {
  TORCH_CHECK(std::isfinite(p.sigma) && p.sigma > 0, "sigma must be a positive finite number, got ",
              p.sigma);
  TORCH_CHECK(p.small_instance_area >= 0, "small_instance_area must be >= 0, got ",
              p.small_instance_area);
  TORCH_CHECK(std::isfinite(p.small_instance_weight), "small_instance_weight must be finite, got ",
              p.small_instance_weight);
}

// The boundary checks of both devices' entry points; returns the validated parameters.
inline EncodeParams check_arguments(const at::Tensor& panoptic, const at::Tensor& segments,
                                    c10::DeviceType device_type, double sigma, int64_t ignore_label,
                                    int64_t small_instance_area, double small_instance_weight,
                                    bool ignore_stuff_in_offset, bool ignore_crowd_in_semantic) {
  check_dim(panoptic, 2, "panoptic", "[H, W] segment ids");
  check_integral(panoptic, "panoptic");
  check_dim(segments, 2, "segments", "[S, 4] (id, train_id, is_thing, iscrowd)");
  check_size(segments, 1, 4, "segments", "columns");
  check_integral(segments, "segments");
  check_device_type(panoptic, device_type, "panoptic");
  check_same_device(panoptic, "panoptic", segments, "segments");
  const EncodeParams params{sigma, ignore_label, small_instance_area, small_instance_weight,
                            ignore_stuff_in_offset, ignore_crowd_in_semantic};
  check_params(params);
  return params;
}

// `segments` as plain host arrays, validated: unique ids, train ids in 0..255 and not ignore_label,
// is_thing / iscrowd in {0, 1}.  `segments_cpu` is [S, 4] int64, contiguous, on the CPU.
struct SegmentTable {
  std::vector<int64_t> ids, train_ids;
  std::vector<uint8_t> is_thing, is_crowd;
  std::vector<std::pair<int64_t, int32_t>> sorted;  // (id, segment index), ascending id

  int64_t size() const { return static_cast<int64_t>(ids.size()); }

  SegmentTable(const at::Tensor& segments_cpu, int64_t ignore_label) {
    const int64_t count = segments_cpu.size(0);
    TORCH_CHECK(count < (int64_t{1} << 30), "segments has too many rows (", count, ")");
    const int64_t* rows = segments_cpu.data_ptr<int64_t>();
    ids.resize(count);
    train_ids.resize(count);
    is_thing.resize(count);
    is_crowd.resize(count);
    sorted.resize(count);
    for (int64_t s = 0; s < count; ++s) {
      const int64_t* row = rows + 4 * s;
      TORCH_CHECK(row[kTrainId] >= 0 && row[kTrainId] <= 255,
                  "segments row ", s, ": train_id must be in 0..255, got ", row[kTrainId]);
      TORCH_CHECK(row[kTrainId] != ignore_label, "segments row ", s, ": train_id equals ignore_label (",
                  ignore_label, "); leave ignored regions out of segments");
      TORCH_CHECK(row[kIsThing] == 0 || row[kIsThing] == 1, "segments row ", s,
                  ": is_thing must be 0 or 1, got ", row[kIsThing]);
      TORCH_CHECK(row[kIsCrowd] == 0 || row[kIsCrowd] == 1, "segments row ", s,
                  ": iscrowd must be 0 or 1, got ", row[kIsCrowd]);
      ids[s] = row[kSegmentId];
      train_ids[s] = row[kTrainId];
      is_thing[s] = static_cast<uint8_t>(row[kIsThing]);
      is_crowd[s] = static_cast<uint8_t>(row[kIsCrowd]);
      sorted[s] = {ids[s], static_cast<int32_t>(s)};
    }
    std::sort(sorted.begin(), sorted.end());
    for (int64_t s = 1; s < count; ++s) {
      TORCH_CHECK(sorted[s].first != sorted[s - 1].first, "segments: id ", sorted[s].first,
                  " appears more than once (rows ", sorted[s - 1].second, " and ", sorted[s].second, ")");
    }
  }

  // A dense id -> index table pays off when the ids span a small range (Cityscapes: 0..33999);
  // otherwise (COCO's R + 256·G + 256²·B ids) lookups binary-search `sorted`.
  static constexpr uint64_t kMaxDenseRange = uint64_t{1} << 18;

  bool dense() const {
    return !sorted.empty() &&
           static_cast<uint64_t>(sorted.back().first) - static_cast<uint64_t>(sorted.front().first) <
               kMaxDenseRange;
  }

  // dense(): entry k is the segment index of id min_id + k, or S when no segment has that id.
  std::vector<int32_t> dense_table() const {
    const int64_t min_id = sorted.front().first;
    std::vector<int32_t> table(static_cast<size_t>(sorted.back().first - min_id + 1),
                               static_cast<int32_t>(size()));
    for (const auto& entry : sorted) table[static_cast<size_t>(entry.first - min_id)] = entry.second;
    return table;
  }
};

// Per-segment targets from the pixel counts and coordinate sums (all of length S), plus the
// unlabelled entry at index S.  Thing segments with >= 1 pixel, crowd included, become instances (in
// segment order): their mass centers go to `center_points` ([K, 2] float32, (y, x)).
struct SegmentSummary {
  std::vector<SegmentTargets> targets;  // S + 1 entries
  std::vector<double> instance_centers;  // K * 2 doubles, (y, x)
};

inline SegmentSummary summarize_segments(const SegmentTable& table, const int64_t* pixel_counts,
                                         const int64_t* sum_y, const int64_t* sum_x,
                                         const EncodeParams& p) {
  const int64_t count = table.size();
  SegmentSummary summary;
  summary.targets.resize(count + 1);
  for (int64_t s = 0; s < count; ++s) {
    SegmentTargets& t = summary.targets[s];
    const bool thing = table.is_thing[s] != 0;
    const bool crowd = table.is_crowd[s] != 0;
    t.semantic = (p.ignore_crowd_in_semantic && crowd) ? p.ignore_label : table.train_ids[s];
    t.center_weight = crowd ? 0.f : 1.f;
    t.offset_weight = (!crowd && (!p.ignore_stuff_in_offset || thing)) ? 1.f : 0.f;
    t.semantic_weight = 1.f;
    t.has_offset = 0;
    t.center_y = 0.0;
    t.center_x = 0.0;
    if (thing && pixel_counts[s] > 0) {
      if (pixel_counts[s] < p.small_instance_area) {
        t.semantic_weight = static_cast<float>(p.small_instance_weight);
      }
      // np.mean over integer coordinates: the exact integer sum divided once, in float64.
      t.center_y = static_cast<double>(sum_y[s]) / static_cast<double>(pixel_counts[s]);
      t.center_x = static_cast<double>(sum_x[s]) / static_cast<double>(pixel_counts[s]);
      t.has_offset = 1;
      summary.instance_centers.push_back(t.center_y);
      summary.instance_centers.push_back(t.center_x);
    }
  }
  SegmentTargets& unlabelled = summary.targets[count];
  unlabelled.semantic = p.ignore_label;
  unlabelled.semantic_weight = 1.f;
  unlabelled.center_weight = 0.f;
  unlabelled.offset_weight = 0.f;
  unlabelled.has_offset = 0;
  unlabelled.center_y = 0.0;
  unlabelled.center_x = 0.0;
  return summary;
}

// The window of the Gaussian around an instance's mass center, clipped to the height x width image:
// (y, x) = center rounded half to even, upper-left = round((x, y) - 3σ - 1), bottom-right (exclusive)
// = round((x, y) + 3σ + 2).  Returns false when nothing of it lies in the image.  All bounds are
// computed in float64 and clipped before conversion, so a huge sigma cannot overflow.
inline bool instance_window(double center_y, double center_x, double sigma, int64_t height,
                            int64_t width, InstanceWindow* window) {
  const double y = round_half_even(center_y);
  const double x = round_half_even(center_x);
  const double left = round_half_even(x - 3 * sigma - 1);
  const double top = round_half_even(y - 3 * sigma - 1);
  const double right = round_half_even(x + 3 * sigma + 2);
  const double bottom = round_half_even(y + 3 * sigma + 2);
  if (left >= static_cast<double>(width) || top >= static_cast<double>(height) || right < 0 ||
      bottom < 0) {
    return false;
  }
  window->col_begin = static_cast<int64_t>(std::max(0.0, left));
  window->col_end = static_cast<int64_t>(std::min(right, static_cast<double>(width)));
  window->row_begin = static_cast<int64_t>(std::max(0.0, top));
  window->row_end = static_cast<int64_t>(std::min(bottom, static_cast<double>(height)));
  // The origin may lie outside the image (clipped windows); a huge sigma is clamped to stay in int64.
  window->top = static_cast<int64_t>(std::max(top, -9.0e15));
  window->left = static_cast<int64_t>(std::max(left, -9.0e15));
  return window->row_begin < window->row_end && window->col_begin < window->col_end;
}

}  // namespace targets
}  // namespace pdlkit
