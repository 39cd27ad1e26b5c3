// Grouping + panoptic merge on the CPU: the device parts of panoptic_merge's host flow, two passes
// over the image, parallel over blocks of rows.
//
//   pass 1  argmax over the logit planes, the semantic map, class areas, the nearest center of every
//           thing pixel and its class vote; and for thing pixels the softmax probabilities of the T
//           thing classes, summed per (center, thing class): once the votes decide a center's
//           class, its class score is one of these sums, so the logits are read exactly once;
//   pass 2  the panoptic map.
//
// No C x H x W probability tensor is made.  Between the passes each pixel keeps one int32 code (its
// center k >= 0, or -1 - its label) in the panoptic output itself, which pass 2 rewrites in place:
// no other image-sized buffer is allocated.  Every per-thread total is an integer (the
// probabilities are summed in fixed point), so the results do not depend on the thread count or on
// which thread took which rows.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <mutex>

#include "../panoptic_merge.h"
#include "merge_rows.h"
#include "simd.h"

namespace pdlkit {
namespace {

// Per-thread accumulators and row buffers of pass 1.
struct Pass1Chunk {
  explicit Pass1Chunk(const MergeProblem& p)
      : fixed(p.logits ? p.slots() * p.width : 0),
        offset_probe(p.width, 0.0f),
        loc_y(p.width + 16),
        loc_x(p.width + 16),
        row_arg(p.width),
        row_slot(p.width),
        row_code(p.width),
        columns(p.width + 16),
        nearest(p.width),
        slot_scores(p.logits ? p.num_centers() * p.slots() : 0, 0) {
    totals.votes.assign(p.num_centers() * p.slots(), 0);
    totals.class_area.assign(std::max<int64_t>(p.num_classes, 1), 0);
  }
  std::vector<int32_t> fixed;  // [T, W]: fixed-point thing-class probabilities of the row's pixels
  std::vector<float> offset_probe, loc_y, loc_x;
  std::vector<int32_t> row_arg, row_slot, row_code, columns, nearest;  // row_code: the row's codes
  VoteTotals totals;
  std::vector<int64_t> slot_scores;  // [K, T]: per center, the summed fixed-point probability of each thing class
};

// Simple loops that GCC vectorises by itself, cloned for AVX-512 / AVX2 / baseline and picked at
// load time (integer moves and float multiplies / adds: the same results on every clone).
#if PDL_X86 && defined(__has_attribute)
#if __has_attribute(target_clones)
#define PDL_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#endif
#endif
#ifndef PDL_CLONES
#define PDL_CLONES
#endif

// probe[x] accumulates oy * 0 + ox * 0: it stays 0 unless an offset is NaN or infinite.
PDL_CLONES void probe_offsets(const float* oy, const float* ox, int64_t width, float* probe) {
  for (int64_t x = 0; x < width; ++x) probe[x] = probe[x] + (oy[x] * 0.0f + ox[x] * 0.0f);
}

// The sum of `count` fixed-point probabilities.
PDL_CLONES int64_t sum_fixed(const int32_t* values, int64_t count) {
  int64_t sum = 0;
  for (int64_t i = 0; i < count; ++i) sum += values[i];
  return sum;
}

class CpuMerge final : public MergeKernels {
 public:
  explicit CpuMerge(const MergeProblem& problem)
      : p_(problem),
        pixels_(problem.height * problem.width),
        rows_per_block_(std::max<int64_t>(1, 16384 / std::max<int64_t>(problem.width, 1))) {}

  VoteTotals pass1() override {
    Pass1Chunk all(p_);
    std::mutex mutex;
    // Blocks of rows handed out one at a time: thing pixels (the costly ones) gather in parts of
    // the image, so equal halves would leave one thread waiting for the other.
    const int64_t blocks = (p_.height + rows_per_block_ - 1) / rows_per_block_;
    std::atomic<int64_t> next_block{0};
    at::parallel_for(0, std::min<int64_t>(blocks, at::get_num_threads()), 1, [&](int64_t, int64_t) {
      Pass1Chunk chunk(p_);
      for (int64_t block = next_block++; block < blocks; block = next_block++) {
        const int64_t end = std::min(p_.height, (block + 1) * rows_per_block_);
        for (int64_t y = block * rows_per_block_; y < end; ++y) pass1_row(y, chunk);
      }
      merge_rows::stream_fence();
      bool bad_offsets = false;
      for (int64_t x = 0; x < p_.width; ++x) bad_offsets |= chunk.offset_probe[x] != 0.0f;  // NaN too
      std::lock_guard<std::mutex> lock(mutex);
      add_into(all.totals.votes, chunk.totals.votes);
      add_into(all.totals.class_area, chunk.totals.class_area);
      add_into(all.slot_scores, chunk.slot_scores);
      all.totals.bad_logits |= chunk.totals.bad_logits;
      all.totals.bad_offsets |= bad_offsets;
    });
    slot_scores_ = std::move(all.slot_scores);
    return std::move(all.totals);
  }

  std::vector<double> pass2(const InstanceAssignment& a) override {
    at::parallel_for(0, p_.height, rows_per_block_, [&](int64_t begin, int64_t end) {
      for (int64_t y = begin; y < end; ++y) panoptic_row(y, a);
    });
    if (!p_.logits) return {};
    std::vector<double> class_score_sums(p_.num_centers(), 0.0);
    const double fixed_one = static_cast<double>(int64_t{1} << merge_rows::kProbabilityBits);
    for (int64_t k = 0; k < p_.num_centers(); ++k) {
      const int32_t class_id = a.class_of_center[k];
      if (class_id >= 0)
        class_score_sums[k] =
            static_cast<double>(slot_scores_[k * p_.slots() + p_.slot_of_class[class_id]]) / fixed_one;
    }
    return class_score_sums;
  }

 private:
  template <typename T>
  static void add_into(std::vector<T>& total, const std::vector<T>& part) {
    for (size_t i = 0; i < part.size(); ++i) total[i] += part[i];
  }

  // The row's labels into c.row_arg, their vote slots into c.row_slot (and, from logits, the
  // thing-class probabilities into c.fixed).
  void row_labels(int64_t y, Pass1Chunk& c) const {
    const int64_t row_start = y * p_.width;
    if (p_.logits) {
      c.totals.bad_logits |= merge_rows::argmax_softmax(
          p_.semantic.data_ptr<float>() + row_start, pixels_, p_.num_classes, p_.width, p_.slot_of_class.data(),
          p_.slots(), p_.num_centers() > 0, c.row_arg.data(), c.row_slot.data(), c.fixed.data(), p_.width);
      return;
    }
    AT_DISPATCH_INTEGRAL_TYPES(p_.semantic.scalar_type(), "panoptic_merge_labels", [&] {
      const scalar_t* row = p_.semantic.data_ptr<scalar_t>() + row_start;
      for (int64_t x = 0; x < p_.width; ++x) c.row_arg[x] = static_cast<int32_t>(row[x]);
    });
    for (int64_t x = 0; x < p_.width; ++x) c.row_slot[x] = p_.slot_of_class[c.row_arg[x]];
  }

  // The row's codes are assembled in c.row_code, then streamed to the panoptic output.
  void pass1_row(int64_t y, Pass1Chunk& c) {
    const int64_t width = p_.width, row_start = y * width;
    row_labels(y, c);
    const int32_t* labels = c.row_arg.data();
    merge_rows::widen_labels(labels, width, p_.semantic_out.data_ptr<int64_t>() + row_start, c.row_code.data());
    merge_rows::add_areas(labels, width, c.totals.class_area.data());
    const float* oy = p_.offsets.data_ptr<float>() + row_start;
    const float* ox = oy + pixels_;
    probe_offsets(oy, ox, width, c.offset_probe.data());
    if (p_.num_centers() > 0) group_row(y, oy, ox, c);
    merge_rows::stream_copy(c.row_code.data(), width, code_row(y));
  }

  // The nearest center of each thing pixel of row y, its vote and its class probabilities.
  void group_row(int64_t y, const float* oy, const float* ox, Pass1Chunk& c) {
    const int64_t slots = p_.slots();
    const int32_t* slot_row = c.row_slot.data();
    const int64_t count =
        merge_rows::compact_things(y, oy, ox, slot_row, p_.width, c.loc_y.data(), c.loc_x.data(), c.columns.data());
    if (count == 0) return;
    merge_rows::nearest_centers(c.loc_y.data(), c.loc_x.data(), count, p_.center_y.data(), p_.center_x.data(),
                                p_.num_centers(), c.nearest.data());
    int32_t* code = c.row_code.data();
    int64_t run_vote = -1, run_length = 0;  // votes by runs of one (center, class), as areas
    for (int64_t i = 0; i < count; ++i) {
      const int32_t x = c.columns[i];
      code[x] = c.nearest[i];
      const int64_t vote = c.nearest[i] * slots + slot_row[x];
      if (vote != run_vote) {
        if (run_length > 0) c.totals.votes[run_vote] += run_length;
        run_vote = vote;
        run_length = 0;
      }
      ++run_length;
    }
    c.totals.votes[run_vote] += run_length;
    if (p_.logits) add_scores(count, c);
  }

  // Per run of adjacent thing pixels with one center, the sums of their probabilities.
  void add_scores(int64_t count, Pass1Chunk& c) const {
    const int64_t slots = p_.slots();
    for (int64_t i = 0; i < count;) {
      int64_t end = i + 1;
      while (end < count && c.nearest[end] == c.nearest[i] && c.columns[end] == c.columns[i] + (end - i)) ++end;
      int64_t* scores = c.slot_scores.data() + c.nearest[i] * slots;
      const int32_t* first = c.fixed.data() + c.columns[i];
      if (end - i < 8) {  // short runs (scattered pixels): not worth a vector loop
        for (int64_t t = 0; t < slots; ++t)
          for (int64_t j = 0; j < end - i; ++j) scores[t] += first[t * p_.width + j];
      } else {
        for (int64_t t = 0; t < slots; ++t) scores[t] += sum_fixed(first + t * p_.width, end - i);
      }
      i = end;
    }
  }

  // Pass 1 keeps each pixel's code in the panoptic output.
  int32_t* code_row(int64_t y) const { return p_.panoptic.data_ptr<int32_t>() + y * p_.width; }

  void panoptic_row(int64_t y, const InstanceAssignment& a) const {
    int32_t* panoptic = code_row(y);
    for (int64_t x = 0; x < p_.width; ++x) {
      const int32_t code = panoptic[x];
      panoptic[x] = code >= 0 ? a.panoptic_of_center[code] : a.stuff_panoptic[-1 - code];
    }
  }

  const MergeProblem& p_;
  const int64_t pixels_;
  const int64_t rows_per_block_;
  std::vector<int64_t> slot_scores_;
};

}  // namespace
}  // namespace pdlkit

TORCH_LIBRARY_IMPL(pdlkit, CPU, m) {
  m.impl("panoptic_merge",
         &pdlkit::panoptic_merge_on<c10::DeviceType::CPU, &pdlkit::find_centers_cpu, pdlkit::CpuMerge>);
}
