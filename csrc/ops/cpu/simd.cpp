#include "simd.h"

#include <cstdlib>
#include <cstring>

namespace pdlkit {
namespace simd {
namespace {

Level detect() {
#if PDL_X86
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
      __builtin_cpu_supports("avx512vl"))
    return Level::kAvx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Level::kAvx2;
  return Level::kSse2;
#else
  return Level::kScalar;
#endif
}

Level cap_from_environment() {
  const char* value = std::getenv("PDL_SIMD");
  if (value == nullptr) return Level::kAvx512;
  if (std::strcmp(value, "scalar") == 0) return Level::kScalar;
  if (std::strcmp(value, "sse2") == 0) return Level::kSse2;
  if (std::strcmp(value, "avx2") == 0) return Level::kAvx2;
  return Level::kAvx512;
}

}  // namespace

Level level() {
  static const Level chosen = [] {
    const Level found = detect(), cap = cap_from_environment();
    return found < cap ? found : cap;
  }();
  return chosen;
}

}  // namespace simd
}  // namespace pdlkit
