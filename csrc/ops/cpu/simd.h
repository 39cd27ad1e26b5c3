// Instruction-set selection for the CPU kernels.  The library is compiled for baseline x86-64; the
// hand-vectorised loops carry PDL_TARGET_* attributes and are chosen once, at the first call, by
// these probes, so one binary runs everywhere and uses AVX-512 / AVX2 where the CPU has them (the
// AVX2 level includes FMA, as every AVX2 CPU does).  SSE2 is part of x86-64 itself.  Every path
// computes the same float operations in the same order, so results do not depend on the path taken.
#pragma once

#if defined(__x86_64__) && defined(__GNUC__)
#define PDL_X86 1
#include <immintrin.h>
#define PDL_TARGET_AVX2 __attribute__((target("avx2,fma")))
#define PDL_TARGET_AVX512 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl")))
#else
#define PDL_X86 0
#endif

namespace pdlkit {
namespace simd {

enum class Level { kScalar = 0, kSse2 = 1, kAvx2 = 2, kAvx512 = 3 };

// The best level this CPU supports, capped by the environment variable PDL_SIMD
// (scalar | sse2 | avx2 | avx512), which lets the tests run every path on one machine.
Level level();

inline bool has_avx2() { return level() >= Level::kAvx2; }
inline bool has_avx512() { return level() >= Level::kAvx512; }

}  // namespace simd
}  // namespace pdlkit
