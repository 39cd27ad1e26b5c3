// The vectorised row loops of the CPU merge, each with scalar, SSE2/AVX2 and AVX-512 forms chosen
// at the first call (simd.h).  Every form computes each pixel with the same float operations in the
// same order (fused multiply-adds only where every form fuses them), so results are bit-identical
// whichever runs.
#pragma once

#include <cstdint>

namespace pdlkit {
namespace merge_rows {

// Probabilities leave the row loops in fixed point, round(p * 2^kProbabilityBits) as int32: their
// sums over a center's pixels are then exact integers, the same in any order, so the class scores
// do not depend on the instruction set, the thread count or how the rows are split.
constexpr int kProbabilityBits = 24;

// One row of logits (C planes of `plane` floats, the row starting at logits_row):
//   row_arg[x]  = argmax over the planes (first maximum, as torch.argmax);
//   row_slot[x] = slot_of_class[row_arg[x]] (slot_of_class has `channels` entries; -1: no thing);
//   when `probabilities`, for the pixels with row_slot[x] >= 0 and every slot t < slots,
//   fixed[t * stride + x] = round(2^24 * softmax probability of the class of slot t) (the entries of
//   other pixels are left undefined).
// Returns true when some logit of the row is NaN or infinite.
bool argmax_softmax(const float* logits_row, int64_t plane, int64_t channels, int64_t width,
                    const int32_t* slot_of_class, int64_t slots, bool probabilities, int32_t* row_arg,
                    int32_t* row_slot, int32_t* fixed, int64_t stride);

// nearest[i] = index of the center nearest to (loc_y[i], loc_x[i]) by the float32 distance of
// panoptic_merge.h (the first center on equal distance).
void nearest_centers(const float* loc_y, const float* loc_x, int64_t count, const float* center_y,
                     const float* center_x, int64_t num_centers, int32_t* nearest);

// The thing pixels of row y (row_slot[x] >= 0), packed: their columns and the locations they point
// at, (y + oy[x], x + ox[x]) rounded to float32.  The three outputs need room for width + 16
// entries (the vector form stores whole registers).  Returns their number.
int64_t compact_things(int64_t y, const float* oy, const float* ox, const int32_t* row_slot, int64_t width,
                       float* loc_y, float* loc_x, int32_t* columns);

// area[labels[x]] += 1 for every x < width.
void add_areas(const int32_t* labels, int64_t width, int64_t* area);

// semantic[x] = labels[x] (int64) and code[x] = -1 - labels[x].  The semantic row goes to memory
// with streaming (non-temporal) stores where aligned: nothing reads it again, and skipping the
// read-for-ownership of its lines saves memory traffic.  Call stream_fence() before other threads
// read what was streamed.
void widen_labels(const int32_t* labels, int64_t width, int64_t* semantic, int32_t* code);

// destination[x] = source[x], with streaming stores where aligned.
void stream_copy(const int32_t* source, int64_t count, int32_t* destination);

// Orders this thread's streaming stores before its later stores.
void stream_fence();

}  // namespace merge_rows
}  // namespace pdlkit
