// The vectorised row loops of the CPU merge, each with scalar, SSE2/AVX2 and AVX-512 forms chosen
// at the first call (simd.h).  Every form performs the same float operations in the same order, no
// fused multiply-add, so results are bit-identical whichever runs.
#pragma once

#include <cstdint>

namespace pdlkit {
namespace merge_rows {

// One row of logits (C planes of `plane` floats, the row starting at logits_row): argmax over the
// planes (first maximum, as torch.argmax) into row_arg.  When slot_of_class is not null, for the
// pixels whose class has a slot t >= 0 (the thing classes), probabilities[t * stride + x] = the
// softmax probability of the class of slot t, exp(logit - max) / sum_c exp(logit_c - max), for
// every slot t < slots (other pixels' entries are left undefined).  probe[x] accumulates logit * 0
// over the rows: it stays 0 unless some logit is NaN or infinite.
void argmax_softmax(const float* logits_row, int64_t plane, int64_t channels, int64_t width,
                    const int32_t* slot_of_class, int64_t slots, int32_t* row_arg, float* probabilities, int64_t stride,
                    float* probe);

// nearest[i] = index of the center nearest to (loc_y[i], loc_x[i]) by the float32 distance of
// panoptic_merge.h (the first center on equal distance).
void nearest_centers(const float* loc_y, const float* loc_x, int64_t count, const float* center_y,
                     const float* center_x, int64_t num_centers, int32_t* nearest);

}  // namespace merge_rows
}  // namespace pdlkit
