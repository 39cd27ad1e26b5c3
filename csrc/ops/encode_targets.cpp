// torch.ops.pdlkit.encode_targets: schema, argument checks and the device-independent host flow.
// Numerics follow detectron2's PanopticDeepLabTargetGenerator: mass centers and offsets in float64
// (then stored as float32), centers rounded half to even, the Gaussian computed in float64.
#include "encode_targets.h"

#include <torch/library.h>

#include "checks.h"

namespace pdlkit {
namespace targets {
namespace {

void check_params(const EncodeParams& p) {
  TORCH_CHECK_VALUE(std::isfinite(p.sigma) && p.sigma >= kMinSigma && p.sigma <= kMaxSigma, "sigma must be between ",
                    kMinSigma, " and ", kMaxSigma, " pixels, got ", p.sigma);
  TORCH_CHECK_VALUE(p.small_instance_area >= 0, "small_instance_area must be >= 0, got ", p.small_instance_area);
  TORCH_CHECK_VALUE(std::isfinite(p.small_instance_weight), "small_instance_weight must be finite, got ",
                    p.small_instance_weight);
}

void check_tensors(const at::Tensor& panoptic, const at::Tensor& segments, c10::DeviceType device_type) {
  check_dim(panoptic, 2, "panoptic", "[H, W] segment ids");
  check_integral(panoptic, "panoptic");
  check_dim(segments, 2, "segments", "[S, 4] (id, train_id, is_thing, iscrowd)");
  check_size(segments, 1, 4, "segments", "columns");
  check_integral(segments, "segments");
  check_device_type(panoptic, device_type, "panoptic");
  check_same_device(panoptic, "panoptic", segments, "segments");
}

void check_segment_row(const int64_t* row, int64_t s, int64_t ignore_label) {
  TORCH_CHECK_VALUE(row[kTrainId] >= 0 && row[kTrainId] <= 255, "segments row ", s,
                    ": train_id must be in 0..255, got ", row[kTrainId]);
  TORCH_CHECK_VALUE(row[kTrainId] != ignore_label, "segments row ", s, ": train_id equals ignore_label (", ignore_label,
                    "); leave ignored regions out of segments");
  TORCH_CHECK_VALUE(row[kIsThing] == 0 || row[kIsThing] == 1, "segments row ", s, ": is_thing must be 0 or 1, got ",
                    row[kIsThing]);
  TORCH_CHECK_VALUE(row[kIsCrowd] == 0 || row[kIsCrowd] == 1, "segments row ", s, ": iscrowd must be 0 or 1, got ",
                    row[kIsCrowd]);
}

SegmentTargets unlabelled_targets(int64_t ignore_label) {
  return SegmentTargets{ignore_label, 1.f, 0.f, 0.f, 0, 0.0, 0.0};
}

SegmentSummary summarize_segments(const SegmentTable& table, const int64_t* pixel_counts, const int64_t* sum_y,
                                  const int64_t* sum_x, const EncodeParams& p) {
  const int64_t count = table.size();
  SegmentSummary summary;
  summary.targets.resize(count + 1);
  for (int64_t s = 0; s < count; ++s) {
    SegmentTargets& t = summary.targets[s];
    const bool thing = table.is_thing[s] != 0;
    const bool crowd = table.is_crowd[s] != 0;
    t = unlabelled_targets(p.ignore_label);
    t.semantic = (p.ignore_crowd_in_semantic && crowd) ? p.ignore_label : table.train_ids[s];
    t.center_weight = crowd ? 0.f : 1.f;
    t.offset_weight = (!crowd && (!p.ignore_stuff_in_offset || thing)) ? 1.f : 0.f;
    if (!thing || pixel_counts[s] == 0) continue;
    if (pixel_counts[s] < p.small_instance_area) t.semantic_weight = static_cast<float>(p.small_instance_weight);
    // np.mean over integer coordinates: the exact integer sum divided once, in float64.
    t.center_y = static_cast<double>(sum_y[s]) / static_cast<double>(pixel_counts[s]);
    t.center_x = static_cast<double>(sum_x[s]) / static_cast<double>(pixel_counts[s]);
    t.has_offset = 1;
    summary.instance_centers.push_back(t.center_y);
    summary.instance_centers.push_back(t.center_x);
  }
  summary.targets[count] = unlabelled_targets(p.ignore_label);
  return summary;
}

// The window of the Gaussian around an instance's mass center, clipped to the height x width image:
// (y, x) = center rounded half to even, upper-left = round((x, y) - 3σ - 1), bottom-right (exclusive)
// = round((x, y) + 3σ + 2).  Returns false when nothing of it lies in the image.
bool instance_window(double center_y, double center_x, double sigma, int64_t height, int64_t width,
                     InstanceWindow* window) {
  const double y = round_half_even(center_y);
  const double x = round_half_even(center_x);
  const double left = round_half_even(x - 3 * sigma - 1);
  const double top = round_half_even(y - 3 * sigma - 1);
  const double right = round_half_even(x + 3 * sigma + 2);
  const double bottom = round_half_even(y + 3 * sigma + 2);
  if (left >= static_cast<double>(width) || top >= static_cast<double>(height) || right < 0 || bottom < 0) {
    return false;
  }
  window->col_begin = static_cast<int64_t>(std::max(0.0, left));
  window->col_end = static_cast<int64_t>(std::min(right, static_cast<double>(width)));
  window->row_begin = static_cast<int64_t>(std::max(0.0, top));
  window->row_end = static_cast<int64_t>(std::min(bottom, static_cast<double>(height)));
  window->top = static_cast<int64_t>(top);  // may lie outside the image (clipped windows)
  window->left = static_cast<int64_t>(left);
  return window->row_begin < window->row_end && window->col_begin < window->col_end;
}

}  // namespace

SegmentTable::SegmentTable(const at::Tensor& segments_cpu, int64_t ignore_label) {
  const int64_t count = segments_cpu.size(0);
  TORCH_CHECK_VALUE(count < (int64_t{1} << 30), "segments has too many rows (", count, ")");
  const int64_t* rows = segments_cpu.data_ptr<int64_t>();
  ids.resize(count);
  train_ids.resize(count);
  is_thing.resize(count);
  is_crowd.resize(count);
  sorted.resize(count);
  for (int64_t s = 0; s < count; ++s) {
    const int64_t* row = rows + 4 * s;
    check_segment_row(row, s, ignore_label);
    ids[s] = row[kSegmentId];
    train_ids[s] = row[kTrainId];
    is_thing[s] = static_cast<uint8_t>(row[kIsThing]);
    is_crowd[s] = static_cast<uint8_t>(row[kIsCrowd]);
    sorted[s] = {ids[s], static_cast<int32_t>(s)};
  }
  std::sort(sorted.begin(), sorted.end());
  for (int64_t s = 1; s < count; ++s) {
    TORCH_CHECK_VALUE(sorted[s].first != sorted[s - 1].first, "segments: id ", sorted[s].first,
                      " appears more than once (rows ", sorted[s - 1].second, " and ", sorted[s].second, ")");
  }
}

bool SegmentTable::dense() const {
  return !sorted.empty() &&
         static_cast<uint64_t>(sorted.back().first) - static_cast<uint64_t>(sorted.front().first) < kMaxDenseRange;
}

std::vector<int32_t> SegmentTable::dense_table() const {
  const int64_t min_id = sorted.front().first;
  std::vector<int32_t> table(static_cast<size_t>(sorted.back().first - min_id + 1), static_cast<int32_t>(size()));
  for (const auto& entry : sorted) table[static_cast<size_t>(entry.first - min_id)] = entry.second;
  return table;
}

EncodeProblem prepare_encode(const at::Tensor& panoptic, const at::Tensor& segments, c10::DeviceType device_type,
                             const EncodeParams& params) {
  check_tensors(panoptic, segments, device_type);
  check_params(params);
  EncodeProblem problem{contiguous(panoptic), params,
                        SegmentTable(segments.to(at::kCPU, at::kLong).contiguous(), params.ignore_label)};
  problem.height = panoptic.size(0);
  problem.width = panoptic.size(1);
  const int64_t height = problem.height, width = problem.width;
  const auto float_options = panoptic.options().dtype(at::kFloat);
  problem.semantic = at::empty({height, width}, panoptic.options().dtype(at::kLong));
  problem.center = at::empty({height, width}, float_options);
  problem.offset = at::empty({2, height, width}, float_options);
  problem.semantic_weights = at::empty({height, width}, float_options);
  problem.center_weights = at::empty({height, width}, float_options);
  problem.offset_weights = at::empty({height, width}, float_options);
  return problem;
}

TargetOutputs run_encode(const EncodeProblem& problem, EncodeKernels& kernels) {
  const std::vector<int64_t> sums = kernels.accumulate();
  const int64_t slots = problem.table.size() + 1;
  const SegmentSummary summary =
      summarize_segments(problem.table, sums.data(), sums.data() + slots, sums.data() + 2 * slots, problem.params);
  const int64_t num_instances = static_cast<int64_t>(summary.instance_centers.size() / 2);
  at::Tensor center_points = at::empty({num_instances, 2}, at::kFloat);
  std::vector<InstanceWindow> windows;
  for (int64_t k = 0; k < num_instances; ++k) {
    const double center_y = summary.instance_centers[2 * k], center_x = summary.instance_centers[2 * k + 1];
    center_points.data_ptr<float>()[2 * k] = static_cast<float>(center_y);
    center_points.data_ptr<float>()[2 * k + 1] = static_cast<float>(center_x);
    InstanceWindow window;
    if (instance_window(center_y, center_x, problem.params.sigma, problem.height, problem.width, &window))
      windows.push_back(window);
  }
  kernels.write(summary, windows);
  return {problem.semantic,      problem.center,           center_points.to(problem.panoptic.device()),
          problem.offset,        problem.semantic_weights, problem.center_weights,
          problem.offset_weights};
}

}  // namespace targets
}  // namespace pdlkit

TORCH_LIBRARY_FRAGMENT(pdlkit, m) {
  m.def(
      "encode_targets(Tensor panoptic, Tensor segments, float sigma, int ignore_label, "
      "int small_instance_area, float small_instance_weight, bool ignore_stuff_in_offset, "
      "bool ignore_crowd_in_semantic) -> (Tensor semantic, Tensor center, Tensor center_points, "
      "Tensor offset, Tensor semantic_weights, Tensor center_weights, Tensor offset_weights)");
}
