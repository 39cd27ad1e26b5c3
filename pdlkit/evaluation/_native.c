/* The pixel loops of pdl eval (module pdlkit.evaluation._native): PNG row unfiltering, the joint
 * histogram of two label maps, and both fused into one pass over an image's files.
 *
 * Unfiltering: Python parses the chunks and inflates the image data (libdeflate or zlib-ng, from
 * imagecodecs); this module undoes the per-row filters (PNG specification, section 9) in place
 * and writes the pixels out, RGB(A) directly as 24-bit segment ids R + 256 G + 256^2 B, so no
 * second pass converts colours.
 *
 * Joint histogram: counts of (row of a[i], column of b[i]) pairs, the rows and columns given by
 * lookup tables over the raw ids, so neither map is first converted to indices; runs of equal
 * pairs (long in label images) are counted at once.
 *
 * count_pngs: the ground-truth and predicted panoptic PNGs (and a semantic label PNG) of one
 * image unfiltered row by row in lockstep, each row counted into PQ's joint histogram and the
 * (ground-truth segment, label) histogram while it is in the cache, so no [H, W] map is written
 * or read again (unless the caller keeps the maps for AP).
 *
 * Loops that gain from SSSE3 or AVX-512 have such versions beside the baseline ones, compiled
 * with target attributes and chosen when the module loads (simd() reports or lowers the level).
 * It is plain C with no torch dependency: `pdl eval` on a folder of files never imports torch.
 * The work runs without the GIL, so images decode in parallel threads.  The source is valid C and
 * C++ (torch's BuildExtension, which builds every extension of setup.py, compiles it as C++).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

/* SSSE3 (byte shuffles) and AVX-512 are not in baseline x86-64: functions that use them are
 * compiled for them with target attributes and chosen at run time by simd_level: 0 baseline
 * (SSE2 on x86-64), 1 SSSE3, 2 SSSE3 + AVX-512 (F, BW, VL, VBMI). */
#if defined(__SSE2__) && defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define HAVE_SSSE3_TARGET 1
#include <immintrin.h>
static int best_simd_level(void) {
  __builtin_cpu_init();
  if (!__builtin_cpu_supports("ssse3")) return 0;
  if (!__builtin_cpu_supports("avx512f") || !__builtin_cpu_supports("avx512bw") ||
      !__builtin_cpu_supports("avx512vl") || !__builtin_cpu_supports("avx512vbmi") ||
      !__builtin_cpu_supports("popcnt"))
    return 1;
  return 2;
}
#else
static int best_simd_level(void) { return 0; }
#endif
static int simd_level = 0; /* set when the module loads */
#define use_ssse3 (simd_level >= 1)

/* The Paeth predictor as two compare-and-select steps (ties favour a, then b), which compile to
 * conditional moves: on noisy rows a branchy version mispredicts about every byte.
 * a = left, b = up, c = upper left. */
static inline int paeth(int a, int b, int c) {
  int pa = abs(b - c), pb = abs(a - c), pc = abs(a + b - 2 * c);
  int best = pb < pa ? pb : pa;
  int r = pb < pa ? b : a;
  return pc < best ? c : r;
}

#if defined(__SSE2__)
/* The Sub filter is a running sum per channel: each 16-byte step takes a log-step prefix sum over
 * its whole pixels (V bytes) and adds the running total of the previous steps (carry), so the
 * serial chain is one vector add per V bytes instead of one add per byte.  Returns the first byte
 * left to the scalar loop (a multiple of BPP). */
#define DEFINE_SUB_SIMD(BPP)                                                                        \
  static Py_ssize_t sub_simd_##BPP(uint8_t *row, Py_ssize_t n) {                                    \
    enum { V = 16 - 16 % BPP };                                                                     \
    const __m128i tail = _mm_slli_si128(_mm_set1_epi8(-1), V);   /* bytes V..15: not ours */        \
    const __m128i first = _mm_srli_si128(_mm_set1_epi8(-1), 16 - BPP); /* bytes 0..BPP-1 */         \
    __m128i carry = _mm_setzero_si128();                                                            \
    Py_ssize_t i = 0;                                                                               \
    __m128i next = n >= 16 ? _mm_loadu_si128((const __m128i *)row) : carry;                         \
    for (; i + 16 <= n; i += V) {                                                                   \
      /* Load the next step before this store: when V < 16 they overlap by a byte, and a load       \
       * straddling a pending store would stall on store forwarding. */                             \
      const __m128i orig = next;                                                                    \
      if (i + V + 16 <= n) next = _mm_loadu_si128((const __m128i *)(row + i + V));                  \
      __m128i x = _mm_add_epi8(orig, _mm_slli_si128(orig, BPP));                                    \
      if (2 * BPP < V) x = _mm_add_epi8(x, _mm_slli_si128(x, (2 * BPP) & 15));                      \
      if (4 * BPP < V) x = _mm_add_epi8(x, _mm_slli_si128(x, (4 * BPP) & 15));                      \
      if (8 * BPP < V) x = _mm_add_epi8(x, _mm_slli_si128(x, (8 * BPP) & 15));                      \
      /* The step's own last pixel, replicated, is computed off the carry chain: the chain is one   \
       * add per step. */                                                                           \
      __m128i last = _mm_and_si128(_mm_srli_si128(x, V - BPP), first);                              \
      last = _mm_or_si128(last, _mm_slli_si128(last, BPP));                                         \
      last = _mm_or_si128(last, _mm_slli_si128(last, (2 * BPP) & 31));                              \
      last = _mm_or_si128(last, _mm_slli_si128(last, (4 * BPP) & 31));                              \
      last = _mm_or_si128(last, _mm_slli_si128(last, (8 * BPP) & 31));                              \
      x = _mm_add_epi8(x, carry);                                                                   \
      _mm_storeu_si128((__m128i *)(row + i), _mm_or_si128(_mm_andnot_si128(tail, x),                \
                                                          _mm_and_si128(tail, orig)));              \
      carry = _mm_add_epi8(carry, last);                                                            \
    }                                                                                               \
    return i;                                                                                       \
  }
DEFINE_SUB_SIMD(1)
DEFINE_SUB_SIMD(2)
DEFINE_SUB_SIMD(3)
DEFINE_SUB_SIMD(4)

#if defined(HAVE_SSSE3_TARGET)
/* One Sub step over the 16 bytes at p: the running byte sum within the lanes (log steps), plus
 * the carry from the previous step; carry becomes this step's last pixel spread over the lanes. */
#define SUB_STEP_SSSE3(BPP, p, carry, spread)                                                       \
  do {                                                                                              \
    __m128i x_ = _mm_loadu_si128((const __m128i *)(p));                                             \
    x_ = _mm_add_epi8(x_, _mm_slli_si128(x_, BPP));                                                 \
    if (2 * BPP < 16) x_ = _mm_add_epi8(x_, _mm_slli_si128(x_, (2 * BPP) & 15));                    \
    if (4 * BPP < 16) x_ = _mm_add_epi8(x_, _mm_slli_si128(x_, (4 * BPP) & 15));                    \
    if (8 * BPP < 16) x_ = _mm_add_epi8(x_, _mm_slli_si128(x_, (8 * BPP) & 15));                    \
    x_ = _mm_add_epi8(x_, carry);                                                                   \
    _mm_storeu_si128((__m128i *)(p), x_);                                                           \
    (carry) = _mm_shuffle_epi8(x_, spread);                                                         \
  } while (0)

/* The Sub filter as a running sum with lag BPP bytes, 16 bytes a step whatever the pixel
 * boundaries: a log-step prefix sum inside the step, plus the previous step's last pixel spread
 * over the lanes by one byte shuffle (byte i takes byte 16 - BPP + i % BPP), so the serial chain
 * is one add and one shuffle per 16 bytes.  Undoes the whole row (the first pixel has no left
 * neighbour and stays); returns n. */
#define DEFINE_SUB_SSSE3(BPP)                                                                       \
  __attribute__((target("ssse3"))) static Py_ssize_t sub_ssse3_##BPP(uint8_t *row, Py_ssize_t n) { \
    uint8_t pattern[16];                                                                            \
    __m128i carry = _mm_setzero_si128(), spread;                                                    \
    Py_ssize_t i;                                                                                   \
    for (i = 0; i < 16; ++i) pattern[i] = (uint8_t)(16 - BPP + i % BPP);                            \
    spread = _mm_loadu_si128((const __m128i *)pattern);                                             \
    for (i = 0; i + 16 <= n; i += 16) {                                                             \
      SUB_STEP_SSSE3(BPP, row + i, carry, spread);                                                  \
    }                                                                                               \
    for (i = i > BPP ? i : BPP; i < n; ++i) row[i] = (uint8_t)(row[i] + row[i - BPP]);              \
    return n;                                                                                       \
  }
DEFINE_SUB_SSSE3(1)
DEFINE_SUB_SSSE3(2)
DEFINE_SUB_SSSE3(3)
DEFINE_SUB_SSSE3(4)
#define SUB_START(BPP, row, n) (use_ssse3 ? sub_ssse3_##BPP(row, n) : sub_simd_##BPP(row, n))
#else
#define SUB_START(BPP, row, n) sub_simd_##BPP(row, n)
#endif
#else
#define SUB_START(BPP, row, n) 0
#endif

/* One pixel of a Paeth row: x[0..BPP) += predictor(left, up, upleft), left updated.  Where left,
 * up and upper left are the same pixel (most of a label image) the predictor is that pixel, and
 * the branch skips the arithmetic that makes Paeth the slowest filter. */
#define PAETH_PIXEL(BPP, x, left, up, ul)                                                           \
  do {                                                                                              \
    int flat_ = 1, k_;                                                                              \
    for (k_ = 0; k_ < BPP; ++k_) flat_ &= ((left)[k_] == (up)[k_]) & ((up)[k_] == (ul)[k_]);        \
    if (flat_)                                                                                      \
      for (k_ = 0; k_ < BPP; ++k_) (left)[k_] = (x)[k_] = (uint8_t)((x)[k_] + (left)[k_]);          \
    else                                                                                            \
      for (k_ = 0; k_ < BPP; ++k_)                                                                  \
        (left)[k_] = (x)[k_] = (uint8_t)((x)[k_] + paeth((left)[k_], (up)[k_], (ul)[k_]));          \
  } while (0)

#if defined(HAVE_SSSE3_TARGET)
/* A Paeth row from byte BPP on (the first pixel done), 16 bytes a step: where the row above is
 * flat (up == upper left on all 16 bytes) the predictor is the left neighbour, so the step is a
 * Sub step (as sub_ssse3); elsewhere (edges in the row above) each byte gets the predictor.  On
 * label images nearly every step is flat. */
#define DEFINE_PAETH_SSSE3(BPP)                                                                     \
  __attribute__((target("ssse3"))) static void paeth_ssse3_##BPP(uint8_t *row, const uint8_t *prev, \
                                                                 Py_ssize_t n) {                    \
    uint8_t pattern[16];                                                                            \
    __m128i carry = _mm_setzero_si128(), spread;                                                    \
    Py_ssize_t i, j;                                                                                \
    int carry_known = 0;                                                                            \
    for (i = 0; i < 16; ++i) pattern[i] = (uint8_t)(16 - BPP + i % BPP);                            \
    spread = _mm_loadu_si128((const __m128i *)pattern);                                             \
    for (i = BPP; i < n && i < 16; ++i)                                                             \
      row[i] = (uint8_t)(row[i] + paeth(row[i - BPP], prev[i], prev[i - BPP]));                     \
    for (; i + 16 <= n; i += 16) {                                                                  \
      const __m128i up = _mm_loadu_si128((const __m128i *)(prev + i));                              \
      const __m128i up_left = _mm_loadu_si128((const __m128i *)(prev + i - BPP));                   \
      if (_mm_movemask_epi8(_mm_cmpeq_epi8(up, up_left)) == 0xFFFF) {                               \
        if (!carry_known)                                                                           \
          carry = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(row + i - 16)), spread);       \
        SUB_STEP_SSSE3(BPP, row + i, carry, spread);                                                \
        carry_known = 1;                                                                            \
      } else {                                                                                      \
        for (j = i; j < i + 16; ++j)                                                                \
          row[j] = (uint8_t)(row[j] + paeth(row[j - BPP], prev[j], prev[j - BPP]));                 \
        carry_known = 0;                                                                            \
      }                                                                                             \
    }                                                                                               \
    for (; i < n; ++i) row[i] = (uint8_t)(row[i] + paeth(row[i - BPP], prev[i], prev[i - BPP]));   \
  }
DEFINE_PAETH_SSSE3(1)
DEFINE_PAETH_SSSE3(2)
DEFINE_PAETH_SSSE3(3)
DEFINE_PAETH_SSSE3(4)
#define PAETH_SSSE3(BPP, row, prev, n) (use_ssse3 ? (paeth_ssse3_##BPP(row, prev, n), 1) : 0)
#else
#define PAETH_SSSE3(BPP, row, prev, n) 0
#endif

/* One row's filter undone in place, for a constant bytes-per-pixel BPP (so the compiler unrolls
 * the channel loop and keeps each channel's left neighbour in a register instead of reloading a
 * byte it has just stored).  prev: the previous, already unfiltered row (zeros for the first).
 * n is a multiple of BPP. */
#define DEFINE_UNFILTER(BPP)                                                                        \
  static int unfilter_row_##BPP(uint8_t filter, uint8_t *row, const uint8_t *prev, Py_ssize_t n) {  \
    Py_ssize_t i;                                                                                   \
    int k, left[BPP];                                                                               \
    if (filter == 0) return 1;                                                                      \
    if (filter == 2) {                                                                              \
      for (i = 0; i < n; ++i) row[i] = (uint8_t)(row[i] + prev[i]);                                 \
      return 1;                                                                                     \
    }                                                                                               \
    if (filter < 1 || filter > 4) return 0;                                                         \
    for (k = 0; k < BPP; ++k) {                                                                     \
      int up = prev[k];                                                                             \
      left[k] = (uint8_t)(row[k] + (filter == 1 ? 0 : filter == 3 ? up >> 1 : up));                 \
      row[k] = (uint8_t)left[k];                                                                    \
    }                                                                                               \
    if (filter == 1) {                                                                              \
      Py_ssize_t start = SUB_START(BPP, row, n);                                                    \
      if (start > 0)                                                                                \
        for (k = 0; k < BPP; ++k) left[k] = row[start - BPP + k];                                   \
      for (i = start > BPP ? start : BPP; i < n; i += BPP)                                          \
        for (k = 0; k < BPP; ++k)                                                                   \
          left[k] = row[i + k] = (uint8_t)(row[i + k] + left[k]);                                   \
    } else if (filter == 3) {                                                                       \
      for (i = BPP; i < n; i += BPP)                                                                \
        for (k = 0; k < BPP; ++k)                                                                   \
          left[k] = row[i + k] = (uint8_t)(row[i + k] + ((left[k] + prev[i + k]) >> 1));            \
    } else if (!PAETH_SSSE3(BPP, row, prev, n)) {                                                   \
      for (i = BPP; i < n; i += BPP) PAETH_PIXEL(BPP, row + i, left, prev + i, prev + i - BPP);     \
    }                                                                                               \
    return 1;                                                                                       \
  }
DEFINE_UNFILTER(1)
DEFINE_UNFILTER(2)
DEFINE_UNFILTER(3)
DEFINE_UNFILTER(4)

/* Two consecutive Paeth rows at once, the second one pixel behind the first (pixel x of row 1
 * needs pixels x - 1 and x of row 0): each row's predictor is a serial chain through its left
 * neighbour, so interleaving two independent chains nearly halves the time on Paeth-heavy files
 * (Pillow's adaptive filtering, as in createPanopticImgs' ground truth, picks Paeth often). */
#define DEFINE_PAETH_PAIR(BPP)                                                                      \
  static void paeth_pair_##BPP(uint8_t *__restrict r0, uint8_t *__restrict r1,                         \
                               const uint8_t *__restrict prev, Py_ssize_t n) {                        \
    int k, left0[BPP], left1[BPP];                                                                  \
    Py_ssize_t i, j;                                                                                \
    for (k = 0; k < BPP; ++k) left0[k] = r0[k] = (uint8_t)(r0[k] + prev[k]);                        \
    for (k = 0; k < BPP; ++k) left1[k] = r1[k] = (uint8_t)(r1[k] + r0[k]);                          \
    if (n > BPP)                                                                                    \
      for (k = 0; k < BPP; ++k)                                                                     \
        left0[k] = r0[BPP + k] = (uint8_t)(r0[BPP + k] + paeth(left0[k], prev[BPP + k], prev[k]));  \
    for (i = 2 * BPP; i < n; i += BPP) {                                                            \
      j = i - BPP;                                                                                  \
      PAETH_PIXEL(BPP, r0 + i, left0, prev + i, prev + j);                                          \
      PAETH_PIXEL(BPP, r1 + j, left1, r0 + j, r0 + j - BPP);                                        \
    }                                                                                               \
    if (n > BPP) PAETH_PIXEL(BPP, r1 + n - BPP, left1, r0 + n - BPP, r0 + n - 2 * BPP);             \
  }
DEFINE_PAETH_PAIR(1)
DEFINE_PAETH_PAIR(2)
DEFINE_PAETH_PAIR(3)
DEFINE_PAETH_PAIR(4)

static void paeth_pair(uint8_t *r0, uint8_t *r1, const uint8_t *prev, Py_ssize_t n, Py_ssize_t bpp) {
  switch (bpp) {
    case 1:
      paeth_pair_1(r0, r1, prev, n);
      break;
    case 2:
      paeth_pair_2(r0, r1, prev, n);
      break;
    case 3:
      paeth_pair_3(r0, r1, prev, n);
      break;
    default:
      paeth_pair_4(r0, r1, prev, n);
  }
}

/* Returns 0 for an unknown filter type. */
static int unfilter_row(uint8_t filter, uint8_t *row, const uint8_t *prev, Py_ssize_t n,
                        Py_ssize_t bpp) {
  switch (bpp) {
    case 1:
      return unfilter_row_1(filter, row, prev, n);
    case 2:
      return unfilter_row_2(filter, row, prev, n);
    case 3:
      return unfilter_row_3(filter, row, prev, n);
    default:
      return unfilter_row_4(filter, row, prev, n);
  }
}

static void write_ids_scalar(const uint8_t *row, Py_ssize_t width, Py_ssize_t channels, int32_t *out,
                             Py_ssize_t x) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  /* One 4-byte load per pixel (R, G, B and the next byte, masked off); the last pixel is read
   * bytewise so the load never leaves the row. */
  for (; x + 1 < width; ++x) {
    uint32_t v;
    memcpy(&v, row + x * channels, 4);
    out[x] = (int32_t)(v & 0xFFFFFFu);
  }
#endif
  for (; x < width; ++x) {
    const uint8_t *p = row + x * channels;
    out[x] = (int32_t)((uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16));
  }
}

#if defined(HAVE_SSSE3_TARGET)
/* Four pixels per byte shuffle (R, G, B, zero each). */
__attribute__((target("ssse3"))) static void write_ids_ssse3(const uint8_t *row, Py_ssize_t width,
                                                             Py_ssize_t channels, int32_t *out) {
  const __m128i rgb = _mm_setr_epi8(0, 1, 2, -1, 3, 4, 5, -1, 6, 7, 8, -1, 9, 10, 11, -1);
  const __m128i rgba = _mm_setr_epi8(0, 1, 2, -1, 4, 5, 6, -1, 8, 9, 10, -1, 12, 13, 14, -1);
  const __m128i order = channels == 3 ? rgb : rgba;
  Py_ssize_t x = 0;
  for (; (x + 4) * channels + (channels == 3 ? 4 : 0) <= width * channels; x += 4) {
    __m128i v = _mm_loadu_si128((const __m128i *)(row + x * channels));
    _mm_storeu_si128((__m128i *)(out + x), _mm_shuffle_epi8(v, order));
  }
  write_ids_scalar(row, width, channels, out, x);
}
#else
#define write_ids_ssse3(row, width, channels, out) write_ids_scalar(row, width, channels, out, 0)
#endif

#if defined(HAVE_SSSE3_TARGET)
/* Sixteen pixels per byte permutation across the whole register (AVX-512 VBMI). */
__attribute__((target("avx512f,avx512bw,avx512vbmi"))) static void write_ids_avx512(
    const uint8_t *row, Py_ssize_t width, Py_ssize_t channels, int32_t *out) {
  uint8_t order[64];
  Py_ssize_t x = 0, k;
  const __mmask64 bytes = channels == 3 ? 0xFFFFFFFFFFFFull : ~0ull; /* 48 or 64 bytes a step */
  for (k = 0; k < 64; ++k) order[k] = (uint8_t)(k / 4 * channels + k % 4);
  const __m512i index = _mm512_loadu_si512(order);
  for (; x + 16 <= width; x += 16) {
    const __m512i v = _mm512_maskz_loadu_epi8(bytes, row + x * channels);
    _mm512_storeu_si512(out + x, _mm512_maskz_permutexvar_epi8(0x7777777777777777ull, index, v));
  }
  write_ids_scalar(row, width, channels, out, x);
}
#else
#define write_ids_avx512(row, width, channels, out) write_ids_scalar(row, width, channels, out, 0)
#endif

/* out[x] = R + 256 G + 256^2 B of pixel x of an RGB(A) row (alpha ignored). */
static void write_ids(const uint8_t *row, Py_ssize_t width, Py_ssize_t channels, int32_t *out) {
  if (simd_level >= 2)
    write_ids_avx512(row, width, channels, out);
  else if (use_ssse3)
    write_ids_ssse3(row, width, channels, out);
  else
    write_ids_scalar(row, width, channels, out, 0);
}

static void write_row(const uint8_t *row, Py_ssize_t y, Py_ssize_t width, Py_ssize_t channels,
                      int ids, uint8_t *out) {
  if (ids)
    write_ids(row, width, channels, (int32_t *)out + y * width);
  else
    memcpy(out + y * width * channels, row, (size_t)(width * channels));
}

/* A PNG's inflated data, unfiltered in place a row (or a Paeth pair) at a time, so that a caller
 * can use each row while it is still in the cache. */
typedef struct {
  uint8_t *data; /* height rows of 1 filter byte + stride bytes */
  Py_ssize_t height, stride, channels;
  Py_ssize_t done;      /* rows unfiltered so far */
  const uint8_t *zeros; /* stride zero bytes: the row above the first */
} png_rows;

static uint8_t *png_row(const png_rows *png, Py_ssize_t y) {
  return png->data + y * (png->stride + 1) + 1;
}

/* Unfilters the rows up to y inclusive; returns 0 at an unknown filter type (row png->done). */
static int png_rows_through(png_rows *png, Py_ssize_t y) {
  while (png->done <= y) {
    Py_ssize_t r = png->done;
    uint8_t *line = png_row(png, r) - 1;
    const uint8_t *prev = r ? line - png->stride : png->zeros;
    /* Paeth pairs help the per-pixel loop only; the SSSE3 path takes rows one at a time. */
    if (!use_ssse3 && line[0] == 4 && r + 1 < png->height && line[png->stride + 1] == 4) {
      paeth_pair(line + 1, line + png->stride + 2, prev, png->stride, png->channels);
      png->done += 2;
    } else if (unfilter_row(line[0], line + 1, prev, png->stride, png->channels)) {
      png->done += 1;
    } else {
      return 0;
    }
  }
  return 1;
}

/* Returns -1 on success, -2 when out of memory, else the row with an unknown filter type. */
static Py_ssize_t unfilter_image(uint8_t *data, Py_ssize_t height, Py_ssize_t width,
                                 Py_ssize_t channels, int ids, uint8_t *out) {
  png_rows png = {data, height, width * channels, channels, 0, NULL};
  Py_ssize_t y;
  uint8_t *zeros = (uint8_t *)calloc((size_t)png.stride, 1);
  if (zeros == NULL) return -2;
  png.zeros = zeros;
  for (y = 0; y < height && png_rows_through(&png, y); ++y)
    write_row(png_row(&png, y), y, width, channels, ids, out);
  free(zeros);
  return y < height ? y : -1;
}

/* None for a decode that went through (bad_row -1), else NULL with the error set: out of memory
 * (-2) or the first row with an unknown filter type. */
static PyObject *row_status(Py_ssize_t bad_row) {
  if (bad_row == -2) return PyErr_NoMemory();
  if (bad_row >= 0) return PyErr_Format(PyExc_ValueError, "unknown PNG filter type in row %zd", bad_row);
  Py_RETURN_NONE;
}

static PyObject *unfilter(PyObject *self, PyObject *args) {
  Py_buffer raw, out;
  Py_ssize_t height, width, channels, bad_row;
  int ids;
  (void)self;
  if (!PyArg_ParseTuple(args, "w*nnnpw*", &raw, &height, &width, &channels, &ids, &out))
    return NULL;
  PyObject *result = NULL;
  Py_ssize_t out_bytes = height * width * (ids ? 4 : channels);
  if (height <= 0 || width <= 0 || channels < 1 || channels > 4 || (ids && channels < 3)) {
    PyErr_Format(PyExc_ValueError, "unfilter: bad image %zdx%zdx%zd", height, width, channels);
  } else if (raw.len != height * (width * channels + 1) || out.len != out_bytes) {
    PyErr_Format(PyExc_ValueError, "unfilter: %zd bytes of image data for %zd expected",
                 raw.len, height * (width * channels + 1));
  } else {
    Py_BEGIN_ALLOW_THREADS
    bad_row = unfilter_image((uint8_t *)raw.buf, height, width, channels, ids, (uint8_t *)out.buf);
    Py_END_ALLOW_THREADS
    result = row_status(bad_row);
  }
  PyBuffer_Release(&raw);
  PyBuffer_Release(&out);
  return result;
}

/* out[row(a[i]) * cols + col(b[i])] += 1 for i < n, where row(v) = a_table[v] for 0 <= v <
 * a_len and a_other otherwise (likewise col). */
#define DEFINE_PAIR_COUNTS(NAME, TA, TB)                                                            \
  static void NAME(const TA *a, const int32_t *a_table, Py_ssize_t a_len, int32_t a_other,          \
                   const TB *b, const int32_t *b_table, Py_ssize_t b_len, int32_t b_other,          \
                   Py_ssize_t n, Py_ssize_t cols, int64_t *out) {                                   \
    Py_ssize_t i = 0;                                                                               \
    while (i < n) {                                                                                 \
      const TA va = a[i];                                                                           \
      const TB vb = b[i];                                                                           \
      Py_ssize_t j = i + 1;                                                                         \
      while (j < n && a[j] == va && b[j] == vb) ++j;                                                \
      const int64_t r = ((int64_t)va >= 0 && (int64_t)va < a_len) ? a_table[va] : a_other;          \
      const int64_t c = ((int64_t)vb < b_len && (int64_t)vb >= 0) ? b_table[vb] : b_other;          \
      out[r * cols + c] += j - i;                                                                   \
      i = j;                                                                                        \
    }                                                                                               \
  }
DEFINE_PAIR_COUNTS(pair_counts_ii, int32_t, int32_t)
DEFINE_PAIR_COUNTS(pair_counts_ib, int32_t, uint8_t)

/* Table entries must lie in [0, rows) / [0, cols); checked before the loop so it cannot write
 * outside out. */
static int table_in_range(const Py_buffer *table, Py_ssize_t limit) {
  const int32_t *t = (const int32_t *)table->buf;
  Py_ssize_t k, len = table->len / 4;
  for (k = 0; k < len; ++k)
    if (t[k] < 0 || t[k] >= limit) return 0;
  return 1;
}

static PyObject *pair_counts(PyObject *self, PyObject *args) {
  Py_buffer a, a_table, b, b_table, out;
  Py_ssize_t rows, cols, n;
  int a_other, b_other, b_is_bytes;
  (void)self;
  if (!PyArg_ParseTuple(args, "y*y*iy*y*ipnnw*", &a, &a_table, &a_other, &b, &b_table, &b_other,
                        &b_is_bytes, &rows, &cols, &out))
    return NULL;
  PyObject *result = NULL;
  n = a.len / 4;
  if (a.len % 4 || a_table.len % 4 || b_table.len % 4 || b.len != (b_is_bytes ? n : 4 * n) ||
      out.len != rows * cols * 8 || a_other < 0 || a_other >= rows || b_other < 0 ||
      b_other >= cols || !table_in_range(&a_table, rows) || !table_in_range(&b_table, cols)) {
    PyErr_SetString(PyExc_ValueError, "pair_counts: inconsistent sizes or table entries");
  } else {
    Py_BEGIN_ALLOW_THREADS
    if (b_is_bytes)
      pair_counts_ib((const int32_t *)a.buf, (const int32_t *)a_table.buf, a_table.len / 4, a_other,
                     (const uint8_t *)b.buf, (const int32_t *)b_table.buf, b_table.len / 4, b_other,
                     n, cols, (int64_t *)out.buf);
    else
      pair_counts_ii((const int32_t *)a.buf, (const int32_t *)a_table.buf, a_table.len / 4, a_other,
                     (const int32_t *)b.buf, (const int32_t *)b_table.buf, b_table.len / 4, b_other,
                     n, cols, (int64_t *)out.buf);
    Py_END_ALLOW_THREADS
    result = Py_None, Py_INCREF(Py_None);
  }
  PyBuffer_Release(&a);
  PyBuffer_Release(&a_table);
  PyBuffer_Release(&b);
  PyBuffer_Release(&b_table);
  PyBuffer_Release(&out);
  return result;
}

/* A value -> row / column lookup: table[v] for 0 <= v < len, other for any other value. */
typedef struct {
  const int32_t *table;
  Py_ssize_t len;
  int32_t other;
} lookup;

static inline int64_t look(const lookup *l, int64_t v) {
  return (v >= 0 && v < l->len) ? l->table[v] : l->other;
}

#if defined(__SSE2__) && defined(__GNUC__)
/* Bit k set: pixel x + k differs from pixel x + k - 1 (x >= 1; 16 pixels). */
static inline uint32_t changes_i32(const int32_t *v) {
  const __m128i *p = (const __m128i *)v, *q = (const __m128i *)(v - 1);
  __m128i e0 = _mm_cmpeq_epi32(_mm_loadu_si128(p), _mm_loadu_si128(q));
  __m128i e1 = _mm_cmpeq_epi32(_mm_loadu_si128(p + 1), _mm_loadu_si128(q + 1));
  __m128i e2 = _mm_cmpeq_epi32(_mm_loadu_si128(p + 2), _mm_loadu_si128(q + 2));
  __m128i e3 = _mm_cmpeq_epi32(_mm_loadu_si128(p + 3), _mm_loadu_si128(q + 3));
  __m128i e = _mm_packs_epi16(_mm_packs_epi32(e0, e1), _mm_packs_epi32(e2, e3));
  return ~(uint32_t)_mm_movemask_epi8(e) & 0xFFFFu;
}

static inline uint32_t changes_u8(const uint8_t *v) {
  __m128i e = _mm_cmpeq_epi8(_mm_loadu_si128((const __m128i *)v), _mm_loadu_si128((const __m128i *)(v - 1)));
  return ~(uint32_t)_mm_movemask_epi8(e) & 0xFFFFu;
}
#endif


/* Arguments of count_pngs: contiguous buffers with a given item type, or None where allowed. */
typedef struct {
  Py_buffer view;
  int present;
} array_arg;

/* The item type of a buffer as one struct code ('b', 'i' for int32, 'q' for int64, 'B' for
 * bytes), so that numpy's "l" / "<q" spellings of int64 compare equal; '?' for anything else. */
static char item_code(const Py_buffer *view) {
  const char *f = view->format ? view->format : "B";
  if (*f == '@' || *f == '=' || *f == '<') ++f;
  if (f[0] == '\0' || f[1] != '\0') return '?';
  if (view->itemsize == 1 && (*f == 'B' || *f == 'b' || *f == 'c')) return 'B';
  if (view->itemsize == 4 && (*f == 'i' || *f == 'l')) return 'i';
  if (view->itemsize == 8 && (*f == 'l' || *f == 'q')) return 'q';
  return '?';
}

/* Returns 0 with a ValueError naming the argument when obj is not a C-contiguous array of
 * `count` items of type code (None is accepted when optional). */
static int get_array(PyObject *obj, array_arg *arg, char code, Py_ssize_t count, int writable,
                     int optional, const char *name) {
  static const char *types[] = {"uint8", "int32", "int64"};
  const char *type = types[code == 'B' ? 0 : code == 'i' ? 1 : 2];
  arg->present = 0;
  if (obj == Py_None && optional) return 1;
  if (PyObject_GetBuffer(obj, &arg->view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT |
                                              (writable ? PyBUF_WRITABLE : 0)) != 0) {
    PyErr_Clear();
    PyErr_Format(PyExc_ValueError, "count_pngs: %s must be a C-contiguous%s %s array", name,
                 writable ? " writable" : "", type);
    return 0;
  }
  arg->present = 1;
  if (item_code(&arg->view) != code || (count >= 0 && arg->view.len != count * arg->view.itemsize)) {
    PyErr_Format(PyExc_ValueError, "count_pngs: %s must hold %zd %s items (it has %zd bytes)", name,
                 count, type, arg->view.len);
    return 0;
  }
  return 1;
}

static void release_arrays(array_arg *args, int n) {
  int k;
  for (k = 0; k < n; ++k)
    if (args[k].present) PyBuffer_Release(&args[k].view);
}

/* The images of one count_pngs call and where their counts go. */
typedef struct {
  png_rows gt, pred, labels; /* labels.data NULL: no label image */
  Py_ssize_t height, width;
  lookup gt_rows, pred_cols, label_cols_of; /* segment id -> row / column, label -> column */
  int64_t *joint, *label_counts;
  Py_ssize_t cols, label_cols;
  int32_t *gt_map, *pred_map; /* [height, width], or NULL: one scratch row */
} png_counts;

/* Appends x + k for each set bit k of bits to ends[count...], returning the new count.  Four
 * entries are written whatever the count (spare ones are overwritten later; ends has room), so
 * a block with up to four changes costs no branch that depends on the data: on noisy maps a
 * bit-by-bit loop mispredicts about once per run. */
static inline Py_ssize_t append_ends(uint32_t bits, int32_t x, int32_t *ends, Py_ssize_t count) {
  int i;
  for (i = 0; i < 4; ++i) {
    ends[count] = x + __builtin_ctz(bits | 0x10000u);
    count += bits != 0;
    bits &= bits - 1;
  }
  for (; bits; bits &= bits - 1) ends[count++] = x + __builtin_ctz(bits);
  return count;
}

/* Adds the runs [ends[r - 1], ends[r]) (the first from 0) of equal (a, b) pairs to
 * out[row(a) * num_cols + col(b)]. */
#define DEFINE_ADD_RUNS(NAME, TB)                                                                  \
  static void NAME(const int32_t *a, const TB *b, const int32_t *ends, Py_ssize_t count,          \
                   const lookup *rows, const lookup *cols, Py_ssize_t num_cols, int64_t *out) {   \
    Py_ssize_t r, start = 0;                                                                      \
    for (r = 0; r < count; ++r) {                                                                 \
      const Py_ssize_t end = ends[r];                                                             \
      out[look(rows, a[start]) * num_cols + look(cols, b[start])] += end - start;                 \
      start = end;                                                                                \
    }                                                                                             \
  }
DEFINE_ADD_RUNS(add_runs_ii, int32_t)
DEFINE_ADD_RUNS(add_runs_ib, uint8_t)

/* Where runs end in pixels 1.. of a row, 16 pixels a step (while x + 16 <= n): (gt a, pred b)
 * runs into joint_ends, (gt a, label l) runs into label_ends when l is given.  Returns the first
 * pixel not examined. */
static Py_ssize_t row_ends_sse2(const int32_t *a, const int32_t *b, const uint8_t *l, Py_ssize_t n,
                                int32_t *joint_ends, Py_ssize_t *joint_count, int32_t *label_ends,
                                Py_ssize_t *label_count) {
  Py_ssize_t x = 1;
#if defined(__SSE2__) && defined(__GNUC__)
  for (; x + 16 <= n; x += 16) {
    const uint32_t gt_changes = changes_i32(a + x);
    *joint_count = append_ends(gt_changes | changes_i32(b + x), (int32_t)x, joint_ends, *joint_count);
    if (l) *label_count = append_ends(gt_changes | changes_u8(l + x), (int32_t)x, label_ends, *label_count);
  }
#else
  (void)a, (void)b, (void)l, (void)n, (void)joint_ends, (void)joint_count, (void)label_ends, (void)label_count;
#endif
  return x;
}

#if defined(HAVE_SSSE3_TARGET)
/* row_ends_sse2 with one 16-lane compare per map into a mask and the positions of its set bits
 * packed by a compress, stored whole (spare lanes are overwritten later): no loop over the bits. */
__attribute__((target("avx512f,avx512bw,avx512vl,popcnt"))) static Py_ssize_t row_ends_avx512(
    const int32_t *a, const int32_t *b, const uint8_t *l, Py_ssize_t n, int32_t *joint_ends,
    Py_ssize_t *joint_count, int32_t *label_ends, Py_ssize_t *label_count) {
  const __m512i lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  Py_ssize_t x = 1, jc = *joint_count, lc = *label_count;
  for (; x + 16 <= n; x += 16) {
    const __m512i at = _mm512_add_epi32(_mm512_set1_epi32((int)x), lanes);
    const __mmask16 gt_changes =
        _mm512_cmpneq_epi32_mask(_mm512_loadu_si512(a + x), _mm512_loadu_si512(a + x - 1));
    const __mmask16 joint = gt_changes | _mm512_cmpneq_epi32_mask(_mm512_loadu_si512(b + x),
                                                                  _mm512_loadu_si512(b + x - 1));
    _mm512_storeu_si512(joint_ends + jc, _mm512_maskz_compress_epi32(joint, at));
    jc += __builtin_popcount(joint);
    if (l) {
      const __mmask16 label = gt_changes | _mm_cmpneq_epi8_mask(_mm_loadu_si128((const __m128i *)(l + x)),
                                                                _mm_loadu_si128((const __m128i *)(l + x - 1)));
      _mm512_storeu_si512(label_ends + lc, _mm512_maskz_compress_epi32(label, at));
      lc += __builtin_popcount(label);
    }
  }
  *joint_count = jc;
  *label_count = lc;
  return x;
}
#else
#define row_ends_avx512 row_ends_sse2
#endif

/* One row of n pixels counted: where (gt a, pred b) runs end and where (gt a, label l) runs end
 * (l may be NULL), found 16 pixels at a time by comparing each map with itself a pixel over, then
 * each histogram's runs added.  ends: room for 2 (n + 16) entries. */
static void count_row(const png_counts *c, const int32_t *a, const int32_t *b, const uint8_t *l,
                      Py_ssize_t n, int32_t *ends) {
  int32_t *joint_ends = ends, *label_ends = ends + n + 16;
  Py_ssize_t joint_count = 0, label_count = 0, x;
  x = (simd_level >= 2 ? row_ends_avx512 : row_ends_sse2)(a, b, l, n, joint_ends, &joint_count, label_ends,
                                                          &label_count);
  for (; x < n; ++x) {
    if (a[x] != a[x - 1] || b[x] != b[x - 1]) joint_ends[joint_count++] = (int32_t)x;
    if (l && (a[x] != a[x - 1] || l[x] != l[x - 1])) label_ends[label_count++] = (int32_t)x;
  }
  joint_ends[joint_count++] = label_ends[label_count++] = (int32_t)n;
  add_runs_ii(a, b, joint_ends, joint_count, &c->gt_rows, &c->pred_cols, c->cols, c->joint);
  if (l)
    add_runs_ib(a, l, label_ends, label_count, &c->gt_rows, &c->label_cols_of, c->label_cols,
                c->label_counts);
}

/* Unfilters the three images row by row and counts each row while it is in the cache.  Returns
 * -1 on success, -2 when out of memory, else the row with an unknown filter type. */
static Py_ssize_t count_images(png_counts *c) {
  const Py_ssize_t w = c->width;
  Py_ssize_t y;
  uint8_t *zeros = (uint8_t *)calloc((size_t)(4 * w), 1);
  int32_t *scratch = (int32_t *)malloc((size_t)(4 * w + 32) * sizeof(int32_t));
  if (zeros == NULL || scratch == NULL) {
    free(zeros);
    free(scratch);
    return -2;
  }
  c->gt.zeros = c->pred.zeros = c->labels.zeros = zeros;
  for (y = 0; y < c->height; ++y) {
    int32_t *gt_ids = c->gt_map ? c->gt_map + y * w : scratch;
    int32_t *pred_ids = c->pred_map ? c->pred_map + y * w : scratch + w;
    if (!png_rows_through(&c->gt, y) || !png_rows_through(&c->pred, y) ||
        (c->labels.data && !png_rows_through(&c->labels, y)))
      break;
    write_ids(png_row(&c->gt, y), w, c->gt.channels, gt_ids);
    write_ids(png_row(&c->pred, y), w, c->pred.channels, pred_ids);
    count_row(c, gt_ids, pred_ids, c->labels.data ? png_row(&c->labels, y) : NULL, w, scratch + 2 * w);
  }
  free(zeros);
  free(scratch);
  return y < c->height ? y : -1;
}

/* Table entries and the fallback value must lie in [0, limit): checked before the pixel loop so
 * that it cannot write outside the counts. */
static int lookup_in_range(const array_arg *table, int32_t other, Py_ssize_t limit, const char *name) {
  const int32_t *t = (const int32_t *)table->view.buf;
  Py_ssize_t k, len = table->view.len / 4;
  int ok = other >= 0 && other < limit;
  for (k = 0; ok && k < len; ++k) ok = t[k] >= 0 && t[k] < limit;
  if (!ok) PyErr_Format(PyExc_ValueError, "count_pngs: %s maps a value outside [0, %zd)", name, limit);
  return ok;
}

/* The [rows, cols] shape of a 2-D counts array, or 0 with a ValueError. */
static int counts_shape(const array_arg *counts, Py_ssize_t *rows, Py_ssize_t *cols, const char *name) {
  if (counts->view.ndim != 2 || counts->view.shape == NULL) {
    PyErr_Format(PyExc_ValueError, "count_pngs: %s must be a 2-D int64 array", name);
    return 0;
  }
  *rows = counts->view.shape[0];
  *cols = counts->view.shape[1];
  return 1;
}

/* Checks every argument (sizes, item types, table ranges) and fills c; 0 with a ValueError. */
static int parse_counts(PyObject **o, Py_ssize_t gc, Py_ssize_t pc, Py_ssize_t h, Py_ssize_t w,
                        int gt_other, int pred_other, int label_other, array_arg *a, png_counts *c) {
  Py_ssize_t rows = 0, cols = 0, label_rows = 0, label_cols = 0;
  if (h <= 0 || w <= 0 || gc < 3 || gc > 4 || pc < 3 || pc > 4) {
    PyErr_Format(PyExc_ValueError, "count_pngs: bad images %zdx%zd with %zd and %zd channels", h, w, gc, pc);
    return 0;
  }
  if (!get_array(o[0], &a[0], 'B', h * (w * gc + 1), 1, 0, "gt_raw") ||
      !get_array(o[1], &a[1], 'B', h * (w * pc + 1), 1, 0, "pred_raw") ||
      !get_array(o[2], &a[2], 'B', h * (w + 1), 1, 1, "labels_raw") ||
      !get_array(o[3], &a[3], 'i', -1, 0, 0, "gt_table") ||
      !get_array(o[4], &a[4], 'i', -1, 0, 0, "pred_table") ||
      !get_array(o[5], &a[5], 'i', -1, 0, 0, "label_table") ||
      !get_array(o[6], &a[6], 'q', -1, 1, 0, "joint") || !counts_shape(&a[6], &rows, &cols, "joint") ||
      !get_array(o[7], &a[7], 'q', -1, 1, a[2].present ? 0 : 1, "label_counts") ||
      (a[7].present && !counts_shape(&a[7], &label_rows, &label_cols, "label_counts")) ||
      !get_array(o[8], &a[8], 'i', h * w, 1, 1, "gt_map") ||
      !get_array(o[9], &a[9], 'i', h * w, 1, 1, "pred_map") ||
      !lookup_in_range(&a[3], gt_other, rows, "gt_table") ||
      !lookup_in_range(&a[4], pred_other, cols, "pred_table") ||
      (a[2].present && !lookup_in_range(&a[5], label_other, label_cols, "label_table")))
    return 0;
  if (a[2].present && label_rows != rows) {
    PyErr_SetString(PyExc_ValueError, "count_pngs: label_counts and joint must have as many rows");
    return 0;
  }
  png_counts filled = {
      {(uint8_t *)a[0].view.buf, h, w * gc, gc, 0, NULL},
      {(uint8_t *)a[1].view.buf, h, w * pc, pc, 0, NULL},
      {a[2].present ? (uint8_t *)a[2].view.buf : NULL, h, w, 1, 0, NULL},
      h, w,
      {(const int32_t *)a[3].view.buf, a[3].view.len / 4, gt_other},
      {(const int32_t *)a[4].view.buf, a[4].view.len / 4, pred_other},
      {(const int32_t *)a[5].view.buf, a[5].view.len / 4, label_other},
      (int64_t *)a[6].view.buf, a[7].present ? (int64_t *)a[7].view.buf : NULL,
      cols, label_cols,
      a[8].present ? (int32_t *)a[8].view.buf : NULL, a[9].present ? (int32_t *)a[9].view.buf : NULL};
  *c = filled;
  return 1;
}

static PyObject *count_pngs(PyObject *self, PyObject *args) {
  PyObject *o[10];
  array_arg a[10];
  Py_ssize_t gc, pc, h, w, bad_row;
  int gt_other, pred_other, label_other, k;
  png_counts c;
  PyObject *result = NULL;
  (void)self;
  for (k = 0; k < 10; ++k) a[k].present = 0;
  if (!PyArg_ParseTuple(args, "OnOnOnnOiOiOiOOOO", &o[0], &gc, &o[1], &pc, &o[2], &h, &w, &o[3],
                        &gt_other, &o[4], &pred_other, &o[5], &label_other, &o[6], &o[7], &o[8], &o[9]))
    return NULL;
  if (parse_counts(o, gc, pc, h, w, gt_other, pred_other, label_other, a, &c)) {
    Py_BEGIN_ALLOW_THREADS
    bad_row = count_images(&c);
    Py_END_ALLOW_THREADS
    result = row_status(bad_row);
  }
  release_arrays(a, 10);
  return result;
}

static PyObject *simd(PyObject *self, PyObject *args) {
  int level = -1, before = simd_level, best = best_simd_level();
  (void)self;
  if (!PyArg_ParseTuple(args, "|i", &level)) return NULL;
  if (level >= 0) simd_level = level < best ? level : best;
  return PyLong_FromLong(before);
}

static PyMethodDef methods[] = {
    {"unfilter", unfilter, METH_VARARGS,
     "unfilter(raw, height, width, channels, rgb_ids, out): undo the row filters of inflated 8-bit\n"
     "PNG data in place (raw: height * (1 + width * channels) bytes) and write the pixels to out:\n"
     "int32 ids R + 256 G + 256^2 B when rgb_ids (3 or 4 channels), else the bytes."},
    {"pair_counts", pair_counts, METH_VARARGS,
     "pair_counts(a, a_table, a_other, b, b_table, b_other, b_is_bytes, rows, cols, out): add the\n"
     "counts of (a_table[a[i]], b_table[b[i]]) pairs to out (int64 [rows * cols]); a: int32, b:\n"
     "int32 or uint8 (b_is_bytes); tables int32; values outside a table map to a_other / b_other."},
    {"count_pngs", count_pngs, METH_VARARGS,
     "count_pngs(gt_raw, gt_channels, pred_raw, pred_channels, labels_raw, height, width,\n"
     "gt_table, gt_other, pred_table, pred_other, label_table, label_other, joint, label_counts,\n"
     "gt_map, pred_map): unfilter two inflated RGB(A) panoptic PNGs (and an 8-bit gray label PNG,\n"
     "or None) row by row, in place, adding to joint (int64 [R, C]) the counts of (gt_table[gt id],\n"
     "pred_table[pred id]) pairs and to label_counts (int64 [R, L]) those of (gt_table[gt id],\n"
     "label_table[label]); ids outside a table map to its *_other.  gt_map / pred_map (int32\n"
     "[height * width], or None) receive the ids."},
    {"simd", simd, METH_VARARGS,
     "simd([level]) -> int: the level of the loops in use before the call (0 baseline, 1 SSSE3,\n"
     "2 AVX-512); with a level, use that one, or the best this CPU has below it (tests compare\n"
     "them).  Not for use while other threads decode."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_native",
                                    "pdl eval's pixel loops, run without the GIL", -1, methods};

PyMODINIT_FUNC PyInit__native(void) {
  simd_level = best_simd_level();
  return PyModule_Create(&module);
}
