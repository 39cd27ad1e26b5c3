// C++ tests of libpdlkit_ops: every op is called through the dispatcher by its schema name, as a
// libtorch user would, on small hand-made inputs whose answers are written out here.  Run by ctest.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <cstdio>
#include <exception>
#include <functional>
#include <string>
#include <tuple>
#include <vector>

namespace {

int failures = 0;

#define EXPECT(condition)                                                           \
  do {                                                                              \
    if (!(condition)) {                                                             \
      std::fprintf(stderr, "%s:%d: expected %s\n", __FILE__, __LINE__, #condition); \
      ++failures;                                                                   \
    }                                                                               \
  } while (0)

// The error must be a c10::Error whose message contains `needle`.
void expect_error(const std::function<void()>& call, const std::string& needle, int line) {
  try {
    call();
  } catch (const c10::Error& error) {
    if (std::string(error.what()).find(needle) == std::string::npos) {
      std::fprintf(stderr, "line %d: error message lacks \"%s\": %s\n", line, needle.c_str(),
                   error.what_without_backtrace());
      ++failures;
    }
    return;
  }
  std::fprintf(stderr, "line %d: expected an error containing \"%s\", got none\n", line, needle.c_str());
  ++failures;
}

at::Tensor long_tensor(const std::vector<int64_t>& values, at::IntArrayRef shape) {
  return at::tensor(values, at::kLong).view(shape).clone();
}

at::Tensor float_tensor(const std::vector<float>& values, at::IntArrayRef shape) {
  return at::tensor(values, at::kFloat).view(shape).clone();
}

bool close(const at::Tensor& a, const at::Tensor& b, double atol = 1e-6) {
  return a.sizes() == b.sizes() && a.scalar_type() == b.scalar_type() && at::allclose(a, b, 0.0, atol);
}

using Targets = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

Targets encode_targets(const at::Tensor& panoptic, const at::Tensor& segments, double sigma,
                       int64_t small_instance_area) {
  static auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("pdlkit::encode_targets", "")
          .typed<Targets(const at::Tensor&, const at::Tensor&, double, int64_t, int64_t, double, bool, bool)>();
  return op.call(panoptic, segments, sigma, /*ignore_label=*/255, small_instance_area,
                 /*small_instance_weight=*/3.0, /*ignore_stuff_in_offset=*/true,
                 /*ignore_crowd_in_semantic=*/false);
}

void test_encode_targets() {
  // 1 = road (stuff, train id 0), 5 = a 2x2 car (thing 13), 9 = a crowd of persons (thing 11),
  // 0 = in no segment.
  const at::Tensor panoptic = long_tensor({1, 1, 1, 1, 1,  //
                                           1, 5, 5, 1, 0,  //
                                           1, 5, 5, 1, 0,  //
                                           9, 9, 1, 1, 1,  //
                                           9, 9, 1, 1, 1},
                                          {5, 5});
  const at::Tensor segments = long_tensor({1, 0, 0, 0, 5, 13, 1, 0, 9, 11, 1, 1}, {3, 4});
  for (const at::Tensor& ids : {panoptic, panoptic.to(at::kInt)}) {
    const auto [semantic, center, center_points, offset, semantic_weights, center_weights, offset_weights] =
        encode_targets(ids, segments, /*sigma=*/1.0, /*small_instance_area=*/5);
    EXPECT(at::equal(semantic, long_tensor({0,  0,  0,  0, 0,    //
                                            0,  13, 13, 0, 255,  //
                                            0,  13, 13, 0, 255,  //
                                            11, 11, 0,  0, 0,    //
                                            11, 11, 0,  0, 0},
                                           {5, 5})));
    EXPECT(close(center_points, float_tensor({1.5f, 1.5f, 3.5f, 0.5f}, {2, 2})));
    EXPECT(close(semantic_weights, float_tensor({1, 1, 1, 1, 1,  //
                                                 1, 3, 3, 1, 1,  //
                                                 1, 3, 3, 1, 1,  //
                                                 3, 3, 1, 1, 1,  //
                                                 3, 3, 1, 1, 1},
                                                {5, 5})));
    EXPECT(close(center_weights, float_tensor({1, 1, 1, 1, 1,  //
                                               1, 1, 1, 1, 0,  //
                                               1, 1, 1, 1, 0,  //
                                               0, 0, 1, 1, 1,  //
                                               0, 0, 1, 1, 1},
                                              {5, 5})));
    EXPECT(close(offset_weights, float_tensor({0, 0, 0, 0, 0,  //
                                               0, 1, 1, 0, 0,  //
                                               0, 1, 1, 0, 0,  //
                                               0, 0, 0, 0, 0,  //
                                               0, 0, 0, 0, 0},
                                              {5, 5})));
    const float h = 0.5f;
    EXPECT(close(offset, float_tensor({0,  0,  0,  0, 0,  //
                                       0,  h,  h,  0, 0,  //
                                       0,  -h, -h, 0, 0,  //
                                       h,  h,  0,  0, 0,  //
                                       -h, -h, 0,  0, 0,  //
                                       0,  0,  0,  0, 0,  //
                                       0,  h,  -h, 0, 0,  //
                                       0,  h,  -h, 0, 0,  //
                                       h,  -h, 0,  0, 0,  //
                                       h,  -h, 0,  0, 0},
                                      {2, 5, 5})));
    // Peaks at the centers rounded half to even, (2, 2) and (4, 0): exp(-d²/2) for the nearest.
    const std::vector<int> nearest_squared_distance = {8, 5, 4, 5, 8, 5, 2, 1, 2, 5, 4, 1, 0,
                                                       1, 4, 1, 2, 1, 2, 5, 0, 1, 4, 5, 8};
    std::vector<float> expected_center;
    for (int d : nearest_squared_distance) expected_center.push_back(std::exp(-d / 2.0));
    EXPECT(close(center, float_tensor(expected_center, {5, 5})));
  }
  // A transposed (non-contiguous) view of the same map gives the transposed semantic map.
  const auto transposed = encode_targets(panoptic.t(), segments, 1.0, 5);
  EXPECT(at::equal(std::get<0>(transposed), std::get<0>(encode_targets(panoptic.t().contiguous(), segments, 1.0, 5))));

  expect_error([&] { encode_targets(panoptic, long_tensor({5, 1, 1, 0, 5, 2, 0, 0}, {2, 4}), 8.0, 0); },
               "appears more than once", __LINE__);
  expect_error([&] { encode_targets(panoptic.to(at::kFloat), segments, 8.0, 0); }, "panoptic must be int32 or int64",
               __LINE__);
  expect_error([&] { encode_targets(panoptic, segments.narrow(1, 0, 3), 8.0, 0); }, "segments has 3 columns", __LINE__);
  expect_error([&] { encode_targets(panoptic, segments, 0.0, 0); }, "sigma", __LINE__);
}

using Centers = std::tuple<at::Tensor, at::Tensor>;

void test_find_instance_centers() {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("pdlkit::find_instance_centers", "")
                       .typed<Centers(const at::Tensor&, double, int64_t, int64_t)>();
  at::Tensor heatmap = at::zeros({5, 7}, at::kFloat);
  heatmap[1][1] = 0.9f;
  heatmap[1][2] = 0.5f;  // inside the 3x3 window of (1, 1): suppressed
  heatmap[3][5] = 0.8f;
  heatmap[4][0] = 0.05f;  // below the threshold
  const auto [centers, scores] = op.call(heatmap, /*threshold=*/0.1, /*nms_kernel=*/3, /*top_k=*/200);
  EXPECT(at::equal(centers, long_tensor({1, 1, 3, 5}, {2, 2})));
  EXPECT(close(scores, float_tensor({0.9f, 0.8f}, {2})));
  // With top_k peaks surviving, only those above the top_k-th value are kept (the top_k quirk, docs/ops.md).
  const auto [top_centers, top_scores] = op.call(heatmap.unsqueeze(0), 0.1, 3, 2);
  EXPECT(at::equal(top_centers, long_tensor({1, 1}, {1, 2})));
  EXPECT(close(top_scores, float_tensor({0.9f}, {1})));
  expect_error([&] { op.call(heatmap, 0.1, 4, 200); }, "nms_kernel", __LINE__);
}

using Merged =
    std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

void test_panoptic_merge() {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("pdlkit::panoptic_merge", "")
                       .typed<Merged(const at::Tensor&, const at::Tensor&, const at::Tensor&, c10::ArrayRef<int64_t>,
                                     int64_t, int64_t, int64_t, double, int64_t, int64_t)>();
  // Left half class 1 (a thing), right half class 0 (stuff); one center at (1, 1); zero offsets.
  const at::Tensor labels = long_tensor({1, 1, 1, 0, 0, 0,  //
                                         1, 1, 1, 0, 0, 0,  //
                                         1, 1, 1, 0, 0, 0,  //
                                         1, 1, 1, 0, 0, 0},
                                        {4, 6});
  at::Tensor heatmap = at::zeros({1, 4, 6}, at::kFloat);
  heatmap[0][1][1] = 0.9f;
  const at::Tensor offsets = at::zeros({2, 4, 6}, at::kFloat);
  const std::vector<int64_t> thing_ids = {1};
  const auto [panoptic, semantic, ids, classes, centers, objectness, class_scores, scores] =
      op.call(labels, heatmap, offsets, thing_ids, /*label_divisor=*/1000, /*stuff_area=*/5,
              /*void_label=*/-1, /*threshold=*/0.1, /*nms_kernel=*/3, /*top_k=*/200);
  EXPECT(at::equal(panoptic, at::tensor(std::vector<int32_t>{1001, 1001, 1001, 0, 0, 0,  //
                                                             1001, 1001, 1001, 0, 0, 0,  //
                                                             1001, 1001, 1001, 0, 0, 0,  //
                                                             1001, 1001, 1001, 0, 0, 0},
                                        at::kInt)
                                 .view({4, 6})));
  EXPECT(at::equal(semantic, labels));
  EXPECT(at::equal(ids, long_tensor({1001}, {1})));
  EXPECT(at::equal(classes, long_tensor({1}, {1})));
  EXPECT(at::equal(centers, long_tensor({1, 1}, {1, 2})));
  EXPECT(close(objectness, float_tensor({0.9f}, {1})));
  EXPECT(close(class_scores, float_tensor({1.0f}, {1})));
  EXPECT(close(scores, float_tensor({0.9f}, {1})));
  // Stuff smaller than stuff_area becomes void.
  const auto small_stuff = op.call(labels, heatmap, offsets, thing_ids, 1000, 13, -1, 0.1, 3, 200);
  EXPECT(std::get<0>(small_stuff).narrow(1, 3, 3).eq(-1).all().item<bool>());
  expect_error([&] { op.call(labels, heatmap, offsets.narrow(1, 0, 3), thing_ids, 1000, 5, -1, 0.1, 3, 200); },
               "offsets", __LINE__);
}

}  // namespace

int main() {
  const std::vector<std::pair<const char*, void (*)()>> tests = {
      {"encode_targets", test_encode_targets},
      {"find_instance_centers", test_find_instance_centers},
      {"panoptic_merge", test_panoptic_merge},
  };
  for (const auto& [name, test] : tests) {
    const int before = failures;
    try {
      test();
    } catch (const std::exception& error) {
      std::fprintf(stderr, "%s: unexpected exception: %s\n", name, error.what());
      ++failures;
    }
    std::printf("%-24s %s\n", name, failures == before ? "ok" : "FAILED");
  }
  if (failures != 0) {
    std::printf("%d check(s) failed\n", failures);
    return 1;
  }
  std::printf("all C++ op tests passed\n");
  return 0;
}
