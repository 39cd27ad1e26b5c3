// torch.ops.pdlkit.panoptic_merge: schema, argument checks and the device-independent host flow.
#include "panoptic_merge.h"

#include <torch/library.h>

#include <algorithm>
#include <limits>

#include "checks.h"

namespace pdlkit {
namespace {

// Checks dtypes and shapes; fills the input fields of `problem` (inputs made contiguous).
void check_semantic(const at::Tensor& semantic, MergeProblem* problem) {
  check_defined(semantic, "semantic");
  if (semantic.is_floating_point()) {
    TORCH_CHECK_VALUE(semantic.scalar_type() == at::kFloat, "semantic logits must be float32, got ",
                      semantic.scalar_type());
    TORCH_CHECK_VALUE(semantic.dim() == 3 && semantic.size(0) >= 1,
                      "semantic logits must be [C, H, W] with C >= 1, got shape ", semantic.sizes());
    problem->logits = true;
    problem->num_classes = semantic.size(0);
  } else {
    const auto type = semantic.scalar_type();
    TORCH_CHECK_VALUE(
        type == at::kByte || type == at::kChar || type == at::kShort || type == at::kInt || type == at::kLong,
        "semantic must be float32 logits [C, H, W] or integer labels [H, W], got ", type);
    check_dim(semantic, 2, "semantic labels", "[H, W]");
  }
  problem->height = semantic.size(-2);
  problem->width = semantic.size(-1);
}

void check_inputs(const at::Tensor& semantic, const at::Tensor& center_heatmap, const at::Tensor& offsets,
                  double threshold, int64_t nms_kernel, int64_t top_k, c10::DeviceType device_type,
                  MergeProblem* problem) {
  check_semantic(semantic, problem);
  check_device_type(semantic, device_type, "semantic");
  const int64_t height = problem->height, width = problem->width;
  at::Tensor heatmap = check_center_nms_args(center_heatmap, "center_heatmap", threshold, nms_kernel, top_k);
  TORCH_CHECK_VALUE(heatmap.size(0) == height && heatmap.size(1) == width, "center_heatmap has size ", heatmap.sizes(),
                    ", semantic has [", height, ", ", width, "]");
  check_defined(offsets, "offsets");
  check_floating(offsets, "offsets");
  TORCH_CHECK_VALUE(offsets.dim() == 3 && offsets.size(0) == 2 && offsets.size(1) == height && offsets.size(2) == width,
                    "offsets must be [2, H, W] = [2, ", height, ", ", width, "] (y, x), got shape ", offsets.sizes());
  check_same_device(heatmap, "center_heatmap", semantic, "semantic");
  check_same_device(offsets, "offsets", semantic, "semantic");
  problem->semantic = contiguous(semantic);
  problem->heatmap = contiguous(heatmap);
  problem->offsets = contiguous(offsets);
}

void check_scalars(at::IntArrayRef thing_ids, int64_t label_divisor, int64_t void_label, bool logits,
                   int64_t num_channels) {
  TORCH_CHECK_VALUE(label_divisor >= 1, "label_divisor must be >= 1, got ", label_divisor);
  TORCH_CHECK_VALUE(
      void_label >= std::numeric_limits<int32_t>::min() && void_label <= std::numeric_limits<int32_t>::max(),
      "void_label must fit in int32, got ", void_label);
  const int64_t class_limit = logits ? num_channels : label_divisor;
  for (const int64_t thing : thing_ids)
    TORCH_CHECK_VALUE(thing >= 0 && thing < class_limit, "thing_ids holds ", thing, ", outside [0, ", class_limit,
                      logits ? ") (the logit channels)" : ") (label_divisor)");
}

// Label input: the number of classes is the largest label + 1 (0 for an empty image).
int64_t label_classes(const at::Tensor& labels, int64_t label_divisor) {
  if (labels.numel() == 0) return 0;
  const auto [low_t, high_t] = at::aminmax(labels);
  const int64_t low = low_t.item<int64_t>(), high = high_t.item<int64_t>();
  TORCH_CHECK_VALUE(low >= 0 && high < label_divisor, "semantic labels must lie in [0, label_divisor=", label_divisor,
                    "), got values in [", low, ", ", high, "]");
  return high + 1;
}

// Raises when a class id times label_divisor plus an instance id can overflow int32.
void check_panoptic_range(int64_t num_classes, int64_t label_divisor, int64_t max_instances) {
  const double largest =
      static_cast<double>(std::max<int64_t>(num_classes - 1, 0)) * static_cast<double>(label_divisor) +
      static_cast<double>(max_instances);
  TORCH_CHECK_VALUE(largest <= static_cast<double>(std::numeric_limits<int32_t>::max()), "label_divisor ",
                    label_divisor, " with class ids up to ", num_classes - 1, " overflows the int32 panoptic ids");
}

// Thing classes below num_classes, sorted and unique: index t of a class in this list is its vote
// slot, so a first maximum over slots gives the smallest class on a tie.
void set_thing_slots(at::IntArrayRef thing_ids, MergeProblem* problem) {
  std::vector<int64_t>& classes = problem->thing_classes;
  for (const int64_t thing : thing_ids)
    if (thing >= 0 && thing < problem->num_classes) classes.push_back(thing);
  std::sort(classes.begin(), classes.end());
  classes.erase(std::unique(classes.begin(), classes.end()), classes.end());
  problem->slot_of_class.assign(std::max<int64_t>(problem->num_classes, 1), -1);
  for (size_t t = 0; t < classes.size(); ++t) problem->slot_of_class[classes[t]] = static_cast<int32_t>(t);
}

// Per center, from its votes: its class (-1 when it owns no pixel), its panoptic id (class *
// label_divisor + running id per class, in center order) and its pixel count.
struct InstanceTable {
  std::vector<int32_t> class_of_center, panoptic_of_center;
  std::vector<int64_t> pixel_count;
};

InstanceTable resolve_instances(const MergeProblem& p, const std::vector<int64_t>& votes) {
  const int64_t slots = p.slots(), num_centers = p.num_centers();
  InstanceTable table;
  table.class_of_center.assign(num_centers, -1);
  table.panoptic_of_center.assign(num_centers, 0);
  table.pixel_count.assign(num_centers, 0);
  std::vector<int64_t> next_id(slots, 0);
  for (int64_t k = 0; k < num_centers; ++k) {
    int64_t best_slot = -1, best_votes = 0, total = 0;
    for (int64_t t = 0; t < slots; ++t) {
      const int64_t v = votes[k * slots + t];
      total += v;
      if (v > best_votes) {  // strict: the first (smallest) class wins a tie
        best_votes = v;
        best_slot = t;
      }
    }
    table.pixel_count[k] = total;
    if (best_slot < 0) continue;
    const int64_t class_id = p.thing_classes[best_slot];
    table.class_of_center[k] = static_cast<int32_t>(class_id);
    table.panoptic_of_center[k] = static_cast<int32_t>(class_id * p.label_divisor + (++next_id[best_slot]));
  }
  return table;
}

// class * label_divisor for a non-thing class of >= stuff_area pixels, void_label for the others.
std::vector<int32_t> stuff_panoptic(const MergeProblem& p, const std::vector<int64_t>& class_area) {
  std::vector<int32_t> value(class_area.size());
  for (size_t c = 0; c < class_area.size(); ++c) {
    const bool kept = class_area[c] > 0 && class_area[c] >= p.stuff_area &&
                      (static_cast<int64_t>(c) >= p.num_classes || p.slot_of_class[c] < 0);
    value[c] = static_cast<int32_t>(kept ? static_cast<int64_t>(c) * p.label_divisor : p.void_label);
  }
  return value;
}

// The per-instance outputs for the centers that own pixels, in center order, on `device`.
std::vector<at::Tensor> instance_outputs(const MergeProblem& p, const InstanceTable& table,
                                         const std::vector<double>& class_score_sums) {
  std::vector<int64_t> kept;
  for (int64_t k = 0; k < p.num_centers(); ++k)
    if (table.class_of_center[k] >= 0) kept.push_back(k);
  const int64_t count = static_cast<int64_t>(kept.size()), width = std::max<int64_t>(p.width, 1);
  at::Tensor ids = at::empty({count}, at::kLong), classes = at::empty({count}, at::kLong);
  at::Tensor points = at::empty({count, 2}, at::kLong);
  at::Tensor objectness = at::empty({count}, at::kFloat), class_scores = at::empty({count}, at::kFloat);
  at::Tensor scores = at::empty({count}, at::kFloat);
  for (int64_t i = 0; i < count; ++i) {
    const int64_t k = kept[i];
    ids.data_ptr<int64_t>()[i] = table.panoptic_of_center[k];
    classes.data_ptr<int64_t>()[i] = table.class_of_center[k];
    points.data_ptr<int64_t>()[2 * i] = p.centers[k].index / width;
    points.data_ptr<int64_t>()[2 * i + 1] = p.centers[k].index % width;
    const float object_score = p.centers[k].score;
    const float class_score =
        p.logits ? static_cast<float>(class_score_sums[k] / static_cast<double>(table.pixel_count[k])) : 1.0f;
    objectness.data_ptr<float>()[i] = object_score;
    class_scores.data_ptr<float>()[i] = class_score;
    scores.data_ptr<float>()[i] = object_score * class_score;
  }
  std::vector<at::Tensor> outputs{ids, classes, points, objectness, class_scores, scores};
  for (at::Tensor& t : outputs) t = t.to(p.semantic.device());
  return outputs;
}

}  // namespace

MergeProblem prepare_merge(const at::Tensor& semantic, const at::Tensor& center_heatmap, const at::Tensor& offsets,
                           at::IntArrayRef thing_ids, int64_t label_divisor, int64_t stuff_area, int64_t void_label,
                           double threshold, int64_t nms_kernel, int64_t top_k, c10::DeviceType device_type,
                           FindCentersFn find_centers) {
  MergeProblem p;
  check_inputs(semantic, center_heatmap, offsets, threshold, nms_kernel, top_k, device_type, &p);
  check_scalars(thing_ids, label_divisor, void_label, p.logits, p.num_classes);
  p.label_divisor = label_divisor;
  p.stuff_area = stuff_area;
  p.void_label = void_label;
  if (!p.logits) p.num_classes = label_classes(p.semantic, label_divisor);
  p.centers = find_centers(p.heatmap, static_cast<float>(threshold), nms_kernel, top_k, "center_heatmap");
  // Bounded by the most instances the op could find, not by how many it did: whether an input is
  // accepted must not depend on the heatmap's values (the Python checks use the same bound).
  check_panoptic_range(p.num_classes, label_divisor, std::min(top_k, p.height * p.width));
  for (const CenterCandidate& c : p.centers) {
    p.center_y.push_back(static_cast<float>(c.index / p.width));
    p.center_x.push_back(static_cast<float>(c.index % p.width));
  }
  set_thing_slots(thing_ids, &p);
  const auto options = p.semantic.options();
  p.semantic_out = at::empty({p.height, p.width}, options.dtype(at::kLong));
  p.panoptic = at::empty({p.height, p.width}, options.dtype(at::kInt));
  return p;
}

MergeOutputs run_merge(const MergeProblem& p, MergeKernels& kernels) {
  const VoteTotals totals = kernels.pass1();
  TORCH_CHECK_VALUE(!totals.bad_logits, "semantic logits contain NaN or infinity");
  TORCH_CHECK_VALUE(!totals.bad_offsets, "offsets contain NaN or infinity");
  const InstanceTable table = resolve_instances(p, totals.votes);
  const InstanceAssignment assignment{table.panoptic_of_center, table.class_of_center,
                                      stuff_panoptic(p, totals.class_area)};
  const std::vector<double> class_score_sums = kernels.pass2(assignment);
  const std::vector<at::Tensor> instances = instance_outputs(p, table, class_score_sums);
  return {p.panoptic,   p.semantic_out, instances[0], instances[1],
          instances[2], instances[3],   instances[4], instances[5]};
}

}  // namespace pdlkit

TORCH_LIBRARY_FRAGMENT(pdlkit, m) {
  m.def(
      "panoptic_merge(Tensor semantic, Tensor center_heatmap, Tensor offsets, int[] thing_ids, "
      "int label_divisor, int stuff_area, int void_label, float threshold, int nms_kernel, int top_k) "
      "-> (Tensor panoptic, Tensor semantic, Tensor ids, Tensor classes, Tensor centers, "
      "Tensor objectness, Tensor class_scores, Tensor scores)");
}
