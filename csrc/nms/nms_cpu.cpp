// CPU greedy NMS, single-class and class-aware (see nms.h for the exact semantics).
//
// Candidates are sorted once by (label, decreasing score, index), so that every class is a
// contiguous run already in visiting order; the greedy pass then compares only boxes of one class,
// on structure-of-arrays copies in the compute type, with a branch-free inner loop the compiler
// vectorises. Classes are independent and run in parallel for large inputs. The kept boxes are
// finally put back into global (decreasing score, index) order.
#include "nms/nms.h"

#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <type_traits>
#include <vector>

namespace fcos_core {
namespace {

// Stable descending order of scores as torch.sort(descending=True, stable=True) defines it:
// NaN first, equal scores (including -0.0 and 0.0) by increasing index.
inline bool score_before(double sa, int64_t ia, double sb, int64_t ib) {
  const bool na = std::isnan(sa);
  const bool nb = std::isnan(sb);
  if (na != nb) {
    return na;
  }
  if (!na && sa != sb) {
    return sa > sb;
  }
  return ia < ib;
}

template <typename K>
struct Candidate {
  K label;  // int64 for integer labels, double for floating ones (both exact)
  double score;
  int64_t index;
};

// Strict weak order on labels with NaN after every number (NaN labels never compare equal, so
// each is later put in a group of its own, as in the reference where NaN != NaN).
template <typename K>
inline bool label_less(K a, K b) {
  if constexpr (std::is_floating_point_v<K>) {
    const bool na = std::isnan(a);
    const bool nb = std::isnan(b);
    if (na || nb) {
      return !na && nb;
    }
  }
  return a < b;
}

// Sorts the candidates by (label, score desc, index) and returns the visiting order and the start
// of each class run (plus a final N).
template <typename K>
void group_by_label(
    const K* labels,
    const double* scores,
    int64_t n,
    std::vector<int64_t>& order,
    std::vector<int64_t>& group_start) {
  std::vector<Candidate<K>> cand(n);
  for (int64_t i = 0; i < n; ++i) {
    cand[i] = {labels ? labels[i] : K(0), scores[i], i};
  }
  std::sort(cand.begin(), cand.end(), [](const Candidate<K>& a, const Candidate<K>& b) {
    if (label_less(a.label, b.label)) {
      return true;
    }
    if (label_less(b.label, a.label)) {
      return false;
    }
    return score_before(a.score, a.index, b.score, b.index);
  });
  order.resize(n);
  group_start.clear();
  for (int64_t i = 0; i < n; ++i) {
    order[i] = cand[i].index;
    if (i == 0 || !(cand[i].label == cand[i - 1].label)) {
      group_start.push_back(i);
    }
  }
  group_start.push_back(n);
}

// Greedy suppression inside one class run [begin, end) of the sorted arrays. The inner loop has no
// branches so that it vectorises; its operations and their order match nms_reference.
template <typename T>
void suppress_run(
    const T* x1,
    const T* y1,
    const T* x2,
    const T* y2,
    const T* area,
    uint8_t* suppressed,
    int64_t begin,
    int64_t end,
    T offset,
    T threshold) {
  for (int64_t i = begin; i < end; ++i) {
    if (suppressed[i]) {
      continue;  // a suppressed box suppresses nothing
    }
    const T ix1 = x1[i], iy1 = y1[i], ix2 = x2[i], iy2 = y2[i], iarea = area[i];
    for (int64_t j = i + 1; j < end; ++j) {
      const T xx1 = ix1 > x1[j] ? ix1 : x1[j];
      const T yy1 = iy1 > y1[j] ? iy1 : y1[j];
      const T xx2 = ix2 < x2[j] ? ix2 : x2[j];
      const T yy2 = iy2 < y2[j] ? iy2 : y2[j];
      T w = xx2 - xx1 + offset;
      T h = yy2 - yy1 + offset;
      w = w > T(0) ? w : T(0);
      h = h > T(0) ? h : T(0);
      const T inter = w * h;
      const T iou = inter / (iarea + area[j] - inter);
      suppressed[j] |= static_cast<uint8_t>(iou > threshold);
    }
  }
}

// Runs the greedy pass on every class run; returns suppressed flags indexed by sorted position.
template <typename scalar_t>
std::vector<uint8_t> suppress_all(
    const at::Tensor& boxes,
    const std::vector<int64_t>& order,
    const std::vector<int64_t>& group_start,
    double iou_threshold,
    bool legacy) {
  using T = at::opmath_type<scalar_t>;
  const int64_t n = static_cast<int64_t>(order.size());
  const scalar_t* b = boxes.const_data_ptr<scalar_t>();
  std::vector<T> x1(n), y1(n), x2(n), y2(n), area(n);
  const T offset = legacy ? T(1) : T(0);
  for (int64_t k = 0; k < n; ++k) {
    const scalar_t* bk = b + 4 * order[k];
    x1[k] = static_cast<T>(bk[0]);
    y1[k] = static_cast<T>(bk[1]);
    x2[k] = static_cast<T>(bk[2]);
    y2[k] = static_cast<T>(bk[3]);
    area[k] = (x2[k] - x1[k] + offset) * (y2[k] - y1[k] + offset);
  }
  std::vector<uint8_t> suppressed(n, 0);
  const T threshold = nms_detail::threshold_below<T>(iou_threshold);
  const int64_t num_groups = static_cast<int64_t>(group_start.size()) - 1;
  // Parallel only when there is enough work to pay for waking the pool.
  const int64_t grain = n >= 4096 ? 1 : std::max<int64_t>(num_groups, 1);
  at::parallel_for(0, num_groups, grain, [&](int64_t g0, int64_t g1) {
    for (int64_t g = g0; g < g1; ++g) {
      suppress_run<T>(
          x1.data(), y1.data(), x2.data(), y2.data(), area.data(), suppressed.data(), group_start[g],
          group_start[g + 1], offset, threshold);
    }
  });
  return suppressed;
}

}  // namespace

at::Tensor nms_cpu_impl(
    const at::Tensor& boxes,
    const at::Tensor& scores,
    const at::Tensor& labels,
    double iou_threshold,
    bool legacy) {
  nms_detail::check_inputs(boxes, scores, labels);
  TORCH_CHECK(boxes.device().is_cpu(), "nms_cpu: expected CPU tensors, got ", boxes.device());
  const int64_t n = boxes.size(0);
  if (n == 0) {
    return at::empty({0}, boxes.options().dtype(at::kLong));
  }
  const at::Tensor boxes_c = boxes.contiguous();
  // float64 holds every float16/bfloat16/float32/float64 score exactly, so one sort serves all.
  const at::Tensor scores_d = scores.to(at::kDouble).contiguous();
  const double* s = scores_d.const_data_ptr<double>();

  std::vector<int64_t> order, group_start;
  if (!labels.defined()) {
    group_by_label<int64_t>(nullptr, s, n, order, group_start);
  } else if (labels.is_floating_point()) {
    const at::Tensor lab = labels.to(at::kDouble).contiguous();
    group_by_label<double>(lab.const_data_ptr<double>(), s, n, order, group_start);
  } else {
    const at::Tensor lab = labels.to(at::kLong).contiguous();
    group_by_label<int64_t>(lab.const_data_ptr<int64_t>(), s, n, order, group_start);
  }

  std::vector<uint8_t> suppressed;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, boxes_c.scalar_type(), "nms_cpu", [&] {
    suppressed = suppress_all<scalar_t>(boxes_c, order, group_start, iou_threshold, legacy);
  });

  std::vector<int64_t> kept;
  kept.reserve(n);
  for (int64_t k = 0; k < n; ++k) {
    if (!suppressed[k]) {
      kept.push_back(order[k]);
    }
  }
  if (group_start.size() > 2) {  // several classes: merge back into global score order
    std::sort(kept.begin(), kept.end(), [s](int64_t a, int64_t b) { return score_before(s[a], a, s[b], b); });
  }
  at::Tensor out = at::empty({static_cast<int64_t>(kept.size())}, boxes.options().dtype(at::kLong));
  std::copy(kept.begin(), kept.end(), out.mutable_data_ptr<int64_t>());
  return out;
}

at::Tensor nms_cpu(const at::Tensor& boxes, const at::Tensor& scores, double iou_threshold, bool legacy) {
  return nms_cpu_impl(boxes, scores, at::Tensor(), iou_threshold, legacy);
}

TORCH_LIBRARY_IMPL(fcos_core, CPU, m) {
  m.impl("nms", &nms_cpu);
}

}  // namespace fcos_core
