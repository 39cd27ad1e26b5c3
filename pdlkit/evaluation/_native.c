/* The two pixel loops of pdl eval (module pdlkit.evaluation._native): PNG row unfiltering and
 * the joint histogram of two label maps.
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
#define SUB_START(BPP, row, n) sub_simd_##BPP(row, n)
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
    } else {                                                                                        \
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

static void write_ids(const uint8_t *row, Py_ssize_t width, Py_ssize_t channels, int32_t *out) {
  Py_ssize_t x = 0;
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

static void write_row(const uint8_t *row, Py_ssize_t y, Py_ssize_t width, Py_ssize_t channels,
                      int ids, uint8_t *out) {
  if (ids)
    write_ids(row, width, channels, (int32_t *)out + y * width);
  else
    memcpy(out + y * width * channels, row, (size_t)(width * channels));
}

/* Returns -1 on success, -2 when out of memory, else the row with an unknown filter type. */
static Py_ssize_t unfilter_image(uint8_t *data, Py_ssize_t height, Py_ssize_t width,
                                 Py_ssize_t channels, int ids, uint8_t *out) {
  Py_ssize_t stride = width * channels, y;
  const uint8_t *prev;
  uint8_t *zeros = (uint8_t *)calloc((size_t)stride, 1);
  if (zeros == NULL) return -2;
  prev = zeros;
  for (y = 0; y < height; ++y) {
    uint8_t *line = data + y * (stride + 1);
    if (line[0] == 4 && y + 1 < height && line[stride + 1] == 4) {
      paeth_pair(line + 1, line + stride + 2, prev, stride, channels);
      write_row(line + 1, y, width, channels, ids, out);
      ++y;
      line += stride + 1;
    } else if (!unfilter_row(line[0], line + 1, prev, stride, channels)) {
      break;
    }
    write_row(line + 1, y, width, channels, ids, out);
    prev = line + 1;
  }
  free(zeros);
  return y < height ? y : -1;
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
    if (bad_row == -2)
      PyErr_NoMemory();
    else if (bad_row >= 0)
      PyErr_Format(PyExc_ValueError, "unknown PNG filter type in row %zd", bad_row);
    else
      result = Py_None, Py_INCREF(Py_None);
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

static PyMethodDef methods[] = {
    {"unfilter", unfilter, METH_VARARGS,
     "unfilter(raw, height, width, channels, rgb_ids, out): undo the row filters of inflated 8-bit\n"
     "PNG data in place (raw: height * (1 + width * channels) bytes) and write the pixels to out:\n"
     "int32 ids R + 256 G + 256^2 B when rgb_ids (3 or 4 channels), else the bytes."},
    {"pair_counts", pair_counts, METH_VARARGS,
     "pair_counts(a, a_table, a_other, b, b_table, b_other, b_is_bytes, rows, cols, out): add the\n"
     "counts of (a_table[a[i]], b_table[b[i]]) pairs to out (int64 [rows * cols]); a: int32, b:\n"
     "int32 or uint8 (b_is_bytes); tables int32; values outside a table map to a_other / b_other."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_native",
                                    "pdl eval's pixel loops, run without the GIL", -1, methods};

PyMODINIT_FUNC PyInit__native(void) { return PyModule_Create(&module); }
