// Panoptic-DeepLab target encoding on the CPU: the two device passes of encode_targets' host flow.
//
// Two passes over the id map, both parallel over rows and both walking runs of equal ids (panoptic
// maps are mostly long runs, so the id -> segment lookup happens once per run, not per pixel):
//   1. per-chunk pixel counts and coordinate sums per segment (exact int64), merged afterwards;
//   2. every output row written once: semantic, weights, offsets, and the center heatmap row (zeros,
//      then the max of every instance Gaussian covering that row — max is order-free, so the result
//      does not depend on the thread count).
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <tuple>
#include <vector>

#include "../encode_targets.h"

namespace pdlkit {
namespace {

using targets::EncodeKernels;
using targets::EncodeProblem;
using targets::InstanceWindow;
using targets::SegmentSummary;
using targets::SegmentTable;
using targets::SegmentTargets;

// id -> segment index (S for ids in no segment).
class SegmentLookup {
 public:
  explicit SegmentLookup(const SegmentTable& table)
      : missing_(static_cast<int32_t>(table.size())), dense_(table.dense()) {
    if (dense_) {
      dense_table_ = table.dense_table();
      min_id_ = table.sorted.front().first;
      max_id_ = table.sorted.back().first;
    } else {
      for (const auto& entry : table.sorted) {
        sorted_ids_.push_back(entry.first);
        sorted_index_.push_back(entry.second);
      }
    }
  }

  int32_t find(int64_t id) const {
    if (dense_) {
      return (id < min_id_ || id > max_id_) ? missing_ : dense_table_[static_cast<size_t>(id - min_id_)];
    }
    const auto it = std::lower_bound(sorted_ids_.begin(), sorted_ids_.end(), id);
    return (it == sorted_ids_.end() || *it != id) ? missing_ : sorted_index_[it - sorted_ids_.begin()];
  }

 private:
  int32_t missing_;
  bool dense_;
  int64_t min_id_ = 0, max_id_ = -1;
  std::vector<int32_t> dense_table_;
  std::vector<int64_t> sorted_ids_;
  std::vector<int32_t> sorted_index_;
};

// Calls run(segment, begin, end) for each maximal run [begin, end) of equal ids in one row.
template <typename id_t, typename RunFn>
inline void for_each_run(const id_t* row, int64_t width, const SegmentLookup& lookup, RunFn&& run) {
  int64_t begin = 0;
  while (begin < width) {
    const id_t id = row[begin];
    int64_t end = begin + 1;
    while (end < width && row[end] == id) ++end;
    run(lookup.find(static_cast<int64_t>(id)), begin, end);
    begin = end;
  }
}

// Pixel counts, sums of y and sums of x per segment: 3 * (S + 1) values (slot S: unlabelled).
template <typename id_t>
std::vector<int64_t> accumulate_segments(const id_t* ids, int64_t height, int64_t width, const SegmentLookup& lookup,
                                         int64_t num_segments) {
  const int64_t slots = num_segments + 1;
  // Fixed row chunks, each with its own accumulators: no sharing, and integer sums are exact, so the
  // merged totals do not depend on how chunks are scheduled.
  const int64_t num_chunks = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), height));
  std::vector<int64_t> partial(static_cast<size_t>(num_chunks * slots * 3), 0);
  at::parallel_for(0, num_chunks, 1, [&](int64_t chunk_begin, int64_t chunk_end) {
    for (int64_t chunk = chunk_begin; chunk < chunk_end; ++chunk) {
      int64_t* counts = partial.data() + chunk * slots * 3;
      int64_t* sum_y = counts + slots;
      int64_t* sum_x = sum_y + slots;
      const int64_t row_begin = height * chunk / num_chunks;
      const int64_t row_end = height * (chunk + 1) / num_chunks;
      for (int64_t y = row_begin; y < row_end; ++y) {
        for_each_run(ids + y * width, width, lookup, [&](int32_t s, int64_t begin, int64_t end) {
          const int64_t n = end - begin;
          counts[s] += n;
          sum_y[s] += y * n;
          sum_x[s] += (begin + end - 1) * n / 2;  // begin + ... + (end - 1)
        });
      }
    }
  });
  std::vector<int64_t> sums(static_cast<size_t>(3 * slots), 0);
  for (int64_t chunk = 0; chunk < num_chunks; ++chunk) {
    const int64_t* counts = partial.data() + chunk * slots * 3;
    for (int64_t i = 0; i < 3 * slots; ++i) sums[i] += counts[i];
  }
  return sums;
}

// The Gaussian windows of all instances, with their cells either precomputed once (when the table
// is no larger than the cells the pastes touch, the usual case: σ = 8 gives a 51 x 51 table) or
// computed on the fly (a huge σ on a small image).  Both give identical values.
class GaussianPaster {
 public:
  GaussianPaster(const std::vector<InstanceWindow>& windows, double sigma)
      : mid_(3 * sigma + 1), two_sigma_sq_(2 * (sigma * sigma)), windows_(windows) {
    double touched_cells = 0, extent = 0;
    for (const InstanceWindow& window : windows_) {
      touched_cells += static_cast<double>(window.row_end - window.row_begin) *
                       static_cast<double>(window.col_end - window.col_begin);
      extent =
          std::max(extent, static_cast<double>(std::max(window.row_end - window.top, window.col_end - window.left)));
    }
    if (!windows_.empty() && extent * extent <= touched_cells) {
      table_size_ = static_cast<int64_t>(extent);
      table_.resize(static_cast<size_t>(table_size_ * table_size_));
      at::parallel_for(0, table_size_, 16, [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) {
          for (int64_t j = 0; j < table_size_; ++j) {
            table_[i * table_size_ + j] = static_cast<float>(
                targets::gaussian_cell(static_cast<double>(i), static_cast<double>(j), mid_, two_sigma_sq_));
          }
        }
      });
    }
  }

  // center_row[x] = max(center_row[x], Gaussian cells of every instance window covering row y).
  void paste_row(int64_t y, float* center_row) const {
    for (const InstanceWindow& window : windows_) {
      if (y < window.row_begin || y >= window.row_end) continue;
      const int64_t i = y - window.top;
      if (table_size_ > 0) {
        const float* cells = table_.data() + i * table_size_ - window.left;
        for (int64_t x = window.col_begin; x < window.col_end; ++x) {
          center_row[x] = std::max(center_row[x], cells[x]);
        }
      } else {
        for (int64_t x = window.col_begin; x < window.col_end; ++x) {
          const float cell = static_cast<float>(targets::gaussian_cell(
              static_cast<double>(i), static_cast<double>(x - window.left), mid_, two_sigma_sq_));
          center_row[x] = std::max(center_row[x], cell);
        }
      }
    }
  }

 private:
  double mid_, two_sigma_sq_;
  std::vector<InstanceWindow> windows_;
  int64_t table_size_ = 0;
  std::vector<float> table_;
};

template <typename id_t>
void write_targets(const id_t* ids, int64_t height, int64_t width, const SegmentLookup& lookup,
                   const std::vector<SegmentTargets>& segment_targets, const GaussianPaster& paster, int64_t* semantic,
                   float* center, float* offset_y, float* offset_x, float* semantic_weights, float* center_weights,
                   float* offset_weights) {
  const int64_t rows_per_task = std::max<int64_t>(1, 32768 / std::max<int64_t>(width, 1));
  at::parallel_for(0, height, rows_per_task, [&](int64_t row_begin, int64_t row_end) {
    for (int64_t y = row_begin; y < row_end; ++y) {
      const int64_t row = y * width;
      for_each_run(ids + row, width, lookup, [&](int32_t s, int64_t begin, int64_t end) {
        const SegmentTargets& t = segment_targets[s];
        std::fill(semantic + row + begin, semantic + row + end, t.semantic);
        std::fill(semantic_weights + row + begin, semantic_weights + row + end, t.semantic_weight);
        std::fill(center_weights + row + begin, center_weights + row + end, t.center_weight);
        std::fill(offset_weights + row + begin, offset_weights + row + end, t.offset_weight);
        if (t.has_offset) {
          const float dy = targets::offset_to_center(t.center_y, y);
          std::fill(offset_y + row + begin, offset_y + row + end, dy);
          for (int64_t x = begin; x < end; ++x) offset_x[row + x] = targets::offset_to_center(t.center_x, x);
        } else {
          std::fill(offset_y + row + begin, offset_y + row + end, 0.f);
          std::fill(offset_x + row + begin, offset_x + row + end, 0.f);
        }
      });
      std::fill(center + row, center + row + width, 0.f);
      paster.paste_row(y, center + row);
    }
  });
}

class CpuEncoder final : public EncodeKernels {
 public:
  explicit CpuEncoder(const EncodeProblem& problem) : problem_(problem), lookup_(problem.table) {}

  std::vector<int64_t> accumulate() override {
    std::vector<int64_t> sums;
    AT_DISPATCH_INDEX_TYPES(problem_.panoptic.scalar_type(), "encode_targets_cpu", [&] {
      sums = accumulate_segments(problem_.panoptic.data_ptr<index_t>(), problem_.height, problem_.width, lookup_,
                                 problem_.table.size());
    });
    return sums;
  }

  void write(const SegmentSummary& summary, const std::vector<InstanceWindow>& windows) override {
    const GaussianPaster paster(windows, problem_.params.sigma);
    const EncodeProblem& p = problem_;
    float* offset = p.offset.data_ptr<float>();
    AT_DISPATCH_INDEX_TYPES(p.panoptic.scalar_type(), "encode_targets_cpu", [&] {
      write_targets(p.panoptic.data_ptr<index_t>(), p.height, p.width, lookup_, summary.targets, paster,
                    p.semantic.data_ptr<int64_t>(), p.center.data_ptr<float>(), offset, offset + p.height * p.width,
                    p.semantic_weights.data_ptr<float>(), p.center_weights.data_ptr<float>(),
                    p.offset_weights.data_ptr<float>());
    });
  }

 private:
  const EncodeProblem& problem_;
  SegmentLookup lookup_;
};

}  // namespace
}  // namespace pdlkit

TORCH_LIBRARY_IMPL(pdlkit, CPU, m) {
  m.impl("encode_targets", &pdlkit::targets::encode_targets_on<c10::DeviceType::CPU, pdlkit::CpuEncoder>);
}
