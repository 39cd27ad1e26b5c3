// Grouping + panoptic merge on the CPU: the device parts of panoptic_merge's host flow, two passes
// over the image, parallel over rows.
//
//   pass 1  argmax over the logit planes, the semantic map, class areas, the nearest center of every
//           thing pixel and its class vote; and for thing pixels the softmax probabilities of the T
//           thing classes, summed per (center, thing class): once the votes decide a center's
//           class, its class score is one of these sums, so the logits are read exactly once;
//   pass 2  the panoptic map.
//
// No C x H x W probability tensor is made.  Between the passes each pixel keeps one int32 code (its
// center k >= 0, or -1 - its label), so pass 2 reads 4 bytes per pixel and nothing else.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <memory>
#include <mutex>

#include "../panoptic_merge.h"
#include "merge_rows.h"
#include "simd.h"

namespace pdlkit {
namespace {

// Per-thread accumulators and row buffers of pass 1.
struct Pass1Chunk {
  explicit Pass1Chunk(const MergeProblem& p)
      : probabilities(p.logits ? p.slots() * p.width : 0),
        logit_probe(p.width, 0.0f),
        offset_probe(p.width, 0.0f),
        loc_y(p.width),
        loc_x(p.width),
        row_arg(p.width),
        columns(p.width),
        nearest(p.width),
        slot_scores(p.logits ? p.num_centers() * p.slots() : 0, 0.0) {
    totals.votes.assign(p.num_centers() * p.slots(), 0);
    totals.class_area.assign(std::max<int64_t>(p.num_classes, 1), 0);
  }
  std::vector<float> probabilities;  // [T, W]: thing-class probabilities of the row's pixels
  std::vector<float> logit_probe, offset_probe, loc_y, loc_x;
  std::vector<int32_t> row_arg, columns, nearest;
  VoteTotals totals;
  std::vector<double> slot_scores;  // [K, T]: per center, the summed probability of each thing class
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

// semantic[x] = labels[x] (int64), code[x] = -1 - labels[x] (no center yet).
PDL_CLONES void widen_labels(const int32_t* labels, int64_t width, int64_t* semantic, int32_t* code) {
  for (int64_t x = 0; x < width; ++x) {
    semantic[x] = labels[x];
    code[x] = -1 - labels[x];
  }
}

// probe[x] accumulates oy * 0 + ox * 0: it stays 0 unless an offset is NaN or infinite.
PDL_CLONES void probe_offsets(const float* oy, const float* ox, int64_t width, float* probe) {
  for (int64_t x = 0; x < width; ++x) probe[x] = probe[x] + (oy[x] * 0.0f + ox[x] * 0.0f);
}

class CpuMerge final : public MergeKernels {
 public:
  explicit CpuMerge(const MergeProblem& problem)
      : p_(problem),
        pixels_(problem.height * problem.width),
        code_(new int32_t[static_cast<size_t>(std::max<int64_t>(pixels_, 1))]),
        grain_(std::max<int64_t>(1, 16384 / std::max<int64_t>(problem.width, 1))) {}

  VoteTotals pass1() override {
    Pass1Chunk all(p_);
    std::mutex mutex;
    at::parallel_for(0, p_.height, grain_, [&](int64_t begin, int64_t end) {
      Pass1Chunk chunk(p_);
      for (int64_t y = begin; y < end; ++y) pass1_row(y, chunk);
      bool bad_logits = false, bad_offsets = false;
      for (int64_t x = 0; x < p_.width; ++x) {  // NaN compares unequal to 0 as well
        bad_logits |= chunk.logit_probe[x] != 0.0f;
        bad_offsets |= chunk.offset_probe[x] != 0.0f;
      }
      std::lock_guard<std::mutex> lock(mutex);
      add_into(all.totals.votes, chunk.totals.votes);
      add_into(all.totals.class_area, chunk.totals.class_area);
      add_into(all.slot_scores, chunk.slot_scores);
      all.totals.bad_logits |= bad_logits;
      all.totals.bad_offsets |= bad_offsets;
    });
    slot_scores_ = std::move(all.slot_scores);
    return std::move(all.totals);
  }

  std::vector<double> pass2(const InstanceAssignment& a) override {
    at::parallel_for(0, p_.height, grain_, [&](int64_t begin, int64_t end) {
      for (int64_t y = begin; y < end; ++y) panoptic_row(y, a);
    });
    if (!p_.logits) return {};
    std::vector<double> class_score_sums(p_.num_centers(), 0.0);
    for (int64_t k = 0; k < p_.num_centers(); ++k) {
      const int32_t class_id = a.class_of_center[k];
      if (class_id >= 0) class_score_sums[k] = slot_scores_[k * p_.slots() + p_.slot_of_class[class_id]];
    }
    return class_score_sums;
  }

 private:
  template <typename T>
  static void add_into(std::vector<T>& total, const std::vector<T>& part) {
    for (size_t i = 0; i < part.size(); ++i) total[i] += part[i];
  }

  // The row's labels into c.row_arg (and, from logits, the thing-class probabilities).
  void row_labels(int64_t y, Pass1Chunk& c) const {
    const int64_t row_start = y * p_.width;
    if (p_.logits) {
      merge_rows::argmax_softmax(p_.semantic.data_ptr<float>() + row_start, pixels_, p_.num_classes, p_.width,
                                 p_.num_centers() > 0 ? p_.slot_of_class.data() : nullptr, p_.slots(), c.row_arg.data(),
                                 c.probabilities.data(), p_.width, c.logit_probe.data());
      return;
    }
    AT_DISPATCH_INTEGRAL_TYPES(p_.semantic.scalar_type(), "panoptic_merge_labels", [&] {
      const scalar_t* row = p_.semantic.data_ptr<scalar_t>() + row_start;
      for (int64_t x = 0; x < p_.width; ++x) c.row_arg[x] = static_cast<int32_t>(row[x]);
    });
  }

  void pass1_row(int64_t y, Pass1Chunk& c) {
    const int64_t width = p_.width, row_start = y * width;
    row_labels(y, c);
    const int32_t* labels = c.row_arg.data();
    int64_t* semantic_row = p_.semantic_out.data_ptr<int64_t>() + row_start;
    int32_t* code = code_.get() + row_start;
    widen_labels(labels, width, semantic_row, code);
    // Areas by runs of equal labels: one increment per run, not a chain of dependent updates.
    for (int64_t x = 0; x < width;) {
      int64_t run_end = x + 1;
      while (run_end < width && labels[run_end] == labels[x]) ++run_end;
      c.totals.class_area[labels[x]] += run_end - x;
      x = run_end;
    }
    const float* oy = p_.offsets.data_ptr<float>() + row_start;
    const float* ox = oy + pixels_;
    probe_offsets(oy, ox, width, c.offset_probe.data());
    if (p_.num_centers() > 0) group_row(y, oy, ox, c);
  }

  // The nearest center of each thing pixel of row y, its vote and its class probabilities.
  void group_row(int64_t y, const float* oy, const float* ox, Pass1Chunk& c) {
    const int64_t slots = p_.slots();
    const int32_t* labels = c.row_arg.data();
    int64_t count = 0;
    for (int64_t x = 0; x < p_.width; ++x) {  // branch-free compaction: thing pixels are scattered
      c.columns[count] = static_cast<int32_t>(x);
      c.loc_y[count] = offset_location(y, oy[x]);
      c.loc_x[count] = offset_location(x, ox[x]);
      count += p_.slot_of_class[labels[x]] >= 0;
    }
    if (count == 0) return;
    merge_rows::nearest_centers(c.loc_y.data(), c.loc_x.data(), count, p_.center_y.data(), p_.center_x.data(),
                                p_.num_centers(), c.nearest.data());
    int32_t* code = code_.get() + y * p_.width;
    int64_t run_vote = -1, run_length = 0;  // votes by runs of one (center, class), as areas
    for (int64_t i = 0; i < count; ++i) {
      const int32_t x = c.columns[i];
      code[x] = c.nearest[i];
      const int64_t vote = c.nearest[i] * slots + p_.slot_of_class[labels[x]];
      if (vote != run_vote) {
        if (run_length > 0) c.totals.votes[run_vote] += run_length;
        run_vote = vote;
        run_length = 0;
      }
      ++run_length;
    }
    c.totals.votes[run_vote] += run_length;
    if (!p_.logits) return;
    for (int64_t i = 0; i < count; ++i) {
      double* scores = c.slot_scores.data() + c.nearest[i] * slots;
      const float* column = c.probabilities.data() + c.columns[i];
      for (int64_t t = 0; t < slots; ++t) scores[t] += static_cast<double>(column[t * p_.width]);
    }
  }

  void panoptic_row(int64_t y, const InstanceAssignment& a) const {
    const int32_t* code = code_.get() + y * p_.width;
    int32_t* panoptic = p_.panoptic.data_ptr<int32_t>() + y * p_.width;
    for (int64_t x = 0; x < p_.width; ++x)
      panoptic[x] = code[x] >= 0 ? a.panoptic_of_center[code[x]] : a.stuff_panoptic[-1 - code[x]];
  }

  const MergeProblem& p_;
  const int64_t pixels_;
  std::unique_ptr<int32_t[]> code_;
  const int64_t grain_;
  std::vector<double> slot_scores_;
};

}  // namespace
}  // namespace pdlkit

TORCH_LIBRARY_IMPL(pdlkit, CPU, m) {
  m.impl("panoptic_merge",
         &pdlkit::panoptic_merge_on<c10::DeviceType::CPU, &pdlkit::find_centers_cpu, pdlkit::CpuMerge>);
}
