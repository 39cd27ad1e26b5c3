// Grouping + panoptic merge on the CPU: the device parts of panoptic_merge's host flow, two passes
// over the image, parallel over rows.
//
//   pass 1  argmax over the logit planes (and the softmax denominator of thing pixels only), the
//           semantic map, class areas, the nearest center of every thing pixel and its class votes;
//   pass 2  the panoptic map, and the class score exp(logit_c - max) / sum of each instance pixel.
//
// No C x H x W probability tensor is made: the logits are read once in full, then one plane value
// per instance pixel.  Between the passes each pixel keeps one int32 code (its center k >= 0, or
// -1 - its label), so pass 2 reads 4 bytes per pixel instead of the int64 semantic map.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <memory>
#include <mutex>

#include "../panoptic_merge.h"
#include "merge_rows.h"

namespace pdlkit {
namespace {

template <typename T>
std::unique_ptr<T[]> uninitialized(int64_t n) {
  return std::unique_ptr<T[]>(new T[static_cast<size_t>(std::max<int64_t>(n, 1))]);
}

// Per-thread row buffers of pass 1.
struct RowScratch {
  explicit RowScratch(int64_t width)
      : row_max(width),
        row_sum(width),
        logit_probe(width, 0.0f),
        offset_probe(width, 0.0f),
        loc_y(width),
        loc_x(width),
        row_arg(width),
        columns(width),
        nearest(width) {}
  std::vector<float> row_max, row_sum, logit_probe, offset_probe, loc_y, loc_x;
  std::vector<int32_t> row_arg, columns, nearest;
};

class CpuMerge final : public MergeKernels {
 public:
  explicit CpuMerge(const MergeProblem& problem)
      : p_(problem),
        pixels_(problem.height * problem.width),
        code_(uninitialized<int32_t>(pixels_)),
        pixel_max_(uninitialized<float>(wants_scores() ? pixels_ : 0)),
        pixel_sum_(uninitialized<float>(wants_scores() ? pixels_ : 0)),
        is_thing_(problem.slot_of_class.size()),
        grain_(std::max<int64_t>(1, 16384 / std::max<int64_t>(problem.width, 1))) {
    for (size_t c = 0; c < is_thing_.size(); ++c) is_thing_[c] = problem.slot_of_class[c] >= 0;
  }

  VoteTotals pass1() override {
    VoteTotals totals = empty_totals();
    std::mutex mutex;
    at::parallel_for(0, p_.height, grain_, [&](int64_t begin, int64_t end) {
      VoteTotals local = empty_totals();
      RowScratch scratch(p_.width);
      for (int64_t y = begin; y < end; ++y) pass1_row(y, scratch, local);
      for (int64_t x = 0; x < p_.width; ++x) {  // NaN compares unequal to 0 as well
        local.bad_logits |= scratch.logit_probe[x] != 0.0f;
        local.bad_offsets |= scratch.offset_probe[x] != 0.0f;
      }
      std::lock_guard<std::mutex> lock(mutex);
      for (size_t i = 0; i < local.votes.size(); ++i) totals.votes[i] += local.votes[i];
      for (size_t i = 0; i < local.class_area.size(); ++i) totals.class_area[i] += local.class_area[i];
      totals.bad_logits |= local.bad_logits;
      totals.bad_offsets |= local.bad_offsets;
    });
    return totals;
  }

  std::vector<double> pass2(const InstanceAssignment& assignment) override {
    std::vector<double> class_score_sums(p_.logits ? p_.num_centers() : 0, 0.0);
    std::mutex mutex;
    at::parallel_for(0, p_.height, grain_, [&](int64_t begin, int64_t end) {
      std::vector<double> local_sums(class_score_sums.size(), 0.0);
      std::vector<float> probabilities(p_.width);
      std::vector<int32_t> members(p_.width);
      for (int64_t y = begin; y < end; ++y) {
        const int64_t count = pass2_row(y, assignment, members.data());
        if (wants_scores() && count > 0)
          add_class_scores(y, assignment, members.data(), count, probabilities.data(), local_sums.data());
      }
      std::lock_guard<std::mutex> lock(mutex);
      for (size_t k = 0; k < local_sums.size(); ++k) class_score_sums[k] += local_sums[k];
    });
    return class_score_sums;
  }

 private:
  bool wants_scores() const { return p_.logits && p_.num_centers() > 0; }

  VoteTotals empty_totals() const {
    VoteTotals totals;
    totals.votes.assign(p_.num_centers() * p_.slots(), 0);
    totals.class_area.assign(std::max<int64_t>(p_.num_classes, 1), 0);
    return totals;
  }

  // The row's labels into s.row_arg (and, from logits, maxima and softmax denominators).
  void row_labels(int64_t y, RowScratch& s) const {
    const int64_t row_start = y * p_.width;
    if (p_.logits) {
      merge_rows::argmax_softmax(p_.semantic.data_ptr<float>() + row_start, pixels_, p_.num_classes, p_.width,
                                 p_.num_centers() > 0 ? is_thing_.data() : nullptr, s.row_max.data(), s.row_arg.data(),
                                 s.row_sum.data(), s.logit_probe.data());
      return;
    }
    AT_DISPATCH_INTEGRAL_TYPES(p_.semantic.scalar_type(), "panoptic_merge_labels", [&] {
      const scalar_t* row = p_.semantic.data_ptr<scalar_t>() + row_start;
      for (int64_t x = 0; x < p_.width; ++x) s.row_arg[x] = static_cast<int32_t>(row[x]);
    });
  }

  void pass1_row(int64_t y, RowScratch& s, VoteTotals& local) {
    const int64_t width = p_.width, row_start = y * width;
    row_labels(y, s);
    const int32_t* labels = s.row_arg.data();
    int64_t* semantic_row = p_.semantic_out.data_ptr<int64_t>() + row_start;
    int32_t* code = code_.get() + row_start;
    for (int64_t x = 0; x < width; ++x) {
      semantic_row[x] = labels[x];
      code[x] = -1 - labels[x];
    }
    // Areas by runs of equal labels: one increment per run, not a chain of dependent updates.
    for (int64_t x = 0; x < width;) {
      int64_t run_end = x + 1;
      while (run_end < width && labels[run_end] == labels[x]) ++run_end;
      local.class_area[labels[x]] += run_end - x;
      x = run_end;
    }
    const float* oy = p_.offsets.data_ptr<float>() + row_start;
    const float* ox = oy + pixels_;
    for (int64_t x = 0; x < width; ++x) s.offset_probe[x] = s.offset_probe[x] + (oy[x] * 0.0f + ox[x] * 0.0f);
    if (p_.num_centers() > 0) group_row(y, oy, ox, s, local);
  }

  // The nearest center of each thing pixel of row y, its vote, and its softmax max / sum.
  void group_row(int64_t y, const float* oy, const float* ox, RowScratch& s, VoteTotals& local) {
    const int64_t row_start = y * p_.width, slots = p_.slots();
    const int32_t* labels = s.row_arg.data();
    int64_t count = 0;
    for (int64_t x = 0; x < p_.width; ++x) {
      if (!is_thing_[labels[x]]) continue;
      s.columns[count] = static_cast<int32_t>(x);
      s.loc_y[count] = offset_location(y, oy[x]);
      s.loc_x[count] = offset_location(x, ox[x]);
      ++count;
    }
    if (count == 0) return;
    merge_rows::nearest_centers(s.loc_y.data(), s.loc_x.data(), count, p_.center_y.data(), p_.center_x.data(),
                                p_.num_centers(), s.nearest.data());
    int32_t* code = code_.get() + row_start;
    int64_t run_vote = -1, run_length = 0;  // votes by runs of one (center, class), as areas
    for (int64_t i = 0; i < count; ++i) {
      const int32_t x = s.columns[i];
      code[x] = s.nearest[i];
      const int64_t vote = s.nearest[i] * slots + p_.slot_of_class[labels[x]];
      if (vote != run_vote) {
        if (run_length > 0) local.votes[run_vote] += run_length;
        run_vote = vote;
        run_length = 0;
      }
      ++run_length;
    }
    local.votes[run_vote] += run_length;
    if (!p_.logits) return;
    for (int64_t i = 0; i < count; ++i) {
      pixel_max_[row_start + s.columns[i]] = s.row_max[s.columns[i]];
      pixel_sum_[row_start + s.columns[i]] = s.row_sum[s.columns[i]];
    }
  }

  // Writes row y of the panoptic map; returns the instance pixels' columns in `members`.
  int64_t pass2_row(int64_t y, const InstanceAssignment& a, int32_t* members) const {
    const int64_t row_start = y * p_.width;
    const int32_t* code = code_.get() + row_start;
    int32_t* panoptic_row = p_.panoptic.data_ptr<int32_t>() + row_start;
    int64_t count = 0;
    for (int64_t x = 0; x < p_.width; ++x) {
      const int32_t c = code[x];
      if (c < 0) {
        panoptic_row[x] = a.stuff_panoptic[-1 - c];
      } else {
        panoptic_row[x] = a.panoptic_of_center[c];
        members[count++] = static_cast<int32_t>(x);
      }
    }
    return count;
  }

  // Adds exp(logit_class - max) / sum of the row's instance pixels to their centers' sums, by runs of
  // one instance in float64.
  void add_class_scores(int64_t y, const InstanceAssignment& a, const int32_t* members, int64_t count,
                        float* probabilities, double* sums) const {
    const int64_t row_start = y * p_.width;
    const int32_t* code = code_.get() + row_start;
    const float* logits = p_.semantic.data_ptr<float>() + row_start;
    for (int64_t i = 0; i < count; ++i) {
      const int64_t x = members[i];
      probabilities[i] = logits[a.class_of_center[code[x]] * pixels_ + x] - pixel_max_[row_start + x];
    }
    merge_rows::exp_in_place(probabilities, count);
    for (int64_t i = 0; i < count; ++i) probabilities[i] = probabilities[i] / pixel_sum_[row_start + members[i]];
    int32_t run_center = code[members[0]];
    double run_sum = 0.0;
    for (int64_t i = 0; i < count; ++i) {
      const int32_t k = code[members[i]];
      if (k != run_center) {
        sums[run_center] += run_sum;
        run_center = k;
        run_sum = 0.0;
      }
      run_sum += static_cast<double>(probabilities[i]);
    }
    sums[run_center] += run_sum;
  }

  const MergeProblem& p_;
  const int64_t pixels_;
  std::unique_ptr<int32_t[]> code_;
  std::unique_ptr<float[]> pixel_max_, pixel_sum_;
  std::vector<uint8_t> is_thing_;
  const int64_t grain_;
};

MergeOutputs panoptic_merge_cpu(const at::Tensor& semantic, const at::Tensor& center_heatmap, const at::Tensor& offsets,
                                at::IntArrayRef thing_ids, int64_t label_divisor, int64_t stuff_area,
                                int64_t void_label, double threshold, int64_t nms_kernel, int64_t top_k) {
  const MergeProblem problem =
      prepare_merge(semantic, center_heatmap, offsets, thing_ids, label_divisor, stuff_area, void_label, threshold,
                    nms_kernel, top_k, c10::DeviceType::CPU, &find_centers_cpu);
  CpuMerge kernels(problem);
  return run_merge(problem, kernels);
}

}  // namespace
}  // namespace pdlkit

TORCH_LIBRARY_IMPL(pdlkit, CPU, m) { m.impl("panoptic_merge", &pdlkit::panoptic_merge_cpu); }
