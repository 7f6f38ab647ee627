// CPU greedy NMS, single-class and class-aware (see nms.h for the exact semantics).
//
// One stable radix sort ranks the boxes by decreasing score; a second, stable, groups the ranks by
// label, so every class is a contiguous run already in visiting order. The greedy pass compares
// only boxes of one class, on structure-of-arrays copies in the compute type, with a branch-free
// inner loop the compiler vectorises; classes are independent and run in parallel for large
// inputs. Walking the ranks finally merges the kept boxes back into global score order.
#include "nms/nms.h"

#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <type_traits>
#include <vector>

namespace fcos_core {
namespace {

// Maps a double to a uint64 whose unsigned order is the numeric order; -0.0 counts as 0.0 and every
// NaN as one value above +inf (the order torch.sort uses).
inline uint64_t ordered_key(double v) {
  if (std::isnan(v)) {
    return ~uint64_t(0);
  }
  if (v == 0.0) {
    v = 0.0;
  }
  const uint64_t bits = std::bit_cast<uint64_t>(v);
  return (bits >> 63) ? ~bits : bits | (uint64_t(1) << 63);
}

// Stable LSD radix sort of `vals` by `keys` (ascending), one byte per pass; bytes that are equal in
// every key are skipped, so float32 scores or small labels stored as 64-bit keys take few passes.
void radix_sort_stable(std::vector<uint64_t>& keys, std::vector<int64_t>& vals) {
  const size_t n = keys.size();
  std::vector<uint64_t> keys_tmp(n);
  std::vector<int64_t> vals_tmp(n);
  std::vector<std::array<uint32_t, 256>> counts(8);
  for (auto& c : counts) {
    c.fill(0);
  }
  for (size_t i = 0; i < n; ++i) {
    for (int d = 0; d < 8; ++d) {
      ++counts[d][(keys[i] >> (8 * d)) & 0xff];
    }
  }
  for (int d = 0; d < 8; ++d) {
    auto& c = counts[d];
    if (c[(keys[0] >> (8 * d)) & 0xff] == n) {
      continue;  // this byte is the same everywhere
    }
    uint32_t sum = 0;
    for (auto& x : c) {
      const uint32_t cnt = x;
      x = sum;
      sum += cnt;
    }
    for (size_t i = 0; i < n; ++i) {
      const uint32_t pos = c[(keys[i] >> (8 * d)) & 0xff]++;
      keys_tmp[pos] = keys[i];
      vals_tmp[pos] = vals[i];
    }
    keys.swap(keys_tmp);
    vals.swap(vals_tmp);
  }
}

// Visiting order: positions sorted by decreasing score, equal scores by increasing index (the
// stable descending torch.sort, NaN first). Returns rank -> original index.
std::vector<int64_t> score_order(const double* scores, int64_t n) {
  std::vector<uint64_t> keys(n);
  std::vector<int64_t> perm(n);
  for (int64_t i = 0; i < n; ++i) {
    keys[i] = ~ordered_key(scores[i]);
    perm[i] = i;
  }
  radix_sort_stable(keys, perm);
  return perm;
}

// Stable grouping of the ranks by label: returns the ranks class by class (each run still in
// score order) and the start of each run plus a final n. Floating NaN labels equal nothing, so
// each NaN-labelled box is a run of its own, as in the reference.
std::vector<int64_t> group_by_label(
    const at::Tensor& labels,
    const std::vector<int64_t>& perm,
    std::vector<int64_t>& group_start) {
  const int64_t n = static_cast<int64_t>(perm.size());
  std::vector<uint64_t> keys(n);
  std::vector<uint8_t> is_nan(n, 0);
  if (labels.is_floating_point()) {
    const at::Tensor lab = labels.to(at::kDouble).contiguous();
    const double* l = lab.const_data_ptr<double>();
    for (int64_t k = 0; k < n; ++k) {
      keys[k] = ordered_key(l[perm[k]]);
      is_nan[k] = std::isnan(l[perm[k]]);
    }
  } else {
    const at::Tensor lab = labels.to(at::kLong).contiguous();
    const int64_t* l = lab.const_data_ptr<int64_t>();
    for (int64_t k = 0; k < n; ++k) {
      keys[k] = static_cast<uint64_t>(l[perm[k]]) ^ (uint64_t(1) << 63);
    }
  }
  std::vector<int64_t> ranks(n);
  std::iota(ranks.begin(), ranks.end(), int64_t(0));
  radix_sort_stable(keys, ranks);
  group_start.clear();
  for (int64_t k = 0; k < n; ++k) {
    if (k == 0 || keys[k] != keys[k - 1] || is_nan[ranks[k]]) {
      group_start.push_back(k);
    }
  }
  group_start.push_back(n);
  return ranks;
}

// Greedy suppression inside one class run [begin, end) of the grouped arrays. The inner loop has no
// branches so that it vectorises; its operations and their order match nms_reference (no FMA: the
// clones below enable AVX/AVX2 only, so products are rounded before the subtraction).
template <typename T>
__attribute__((always_inline)) inline void suppress_run(
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

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define FCOS_NMS_CLONES __attribute__((target_clones("avx2", "avx", "default")))
#else
#define FCOS_NMS_CLONES
#endif

FCOS_NMS_CLONES void suppress_run_float(
    const float* x1, const float* y1, const float* x2, const float* y2, const float* area,
    uint8_t* suppressed, int64_t begin, int64_t end, float offset, float threshold) {
  suppress_run<float>(x1, y1, x2, y2, area, suppressed, begin, end, offset, threshold);
}

FCOS_NMS_CLONES void suppress_run_double(
    const double* x1, const double* y1, const double* x2, const double* y2, const double* area,
    uint8_t* suppressed, int64_t begin, int64_t end, double offset, double threshold) {
  suppress_run<double>(x1, y1, x2, y2, area, suppressed, begin, end, offset, threshold);
}

inline void suppress_run_any(
    const float* x1, const float* y1, const float* x2, const float* y2, const float* area,
    uint8_t* suppressed, int64_t begin, int64_t end, float offset, float threshold) {
  suppress_run_float(x1, y1, x2, y2, area, suppressed, begin, end, offset, threshold);
}

inline void suppress_run_any(
    const double* x1, const double* y1, const double* x2, const double* y2, const double* area,
    uint8_t* suppressed, int64_t begin, int64_t end, double offset, double threshold) {
  suppress_run_double(x1, y1, x2, y2, area, suppressed, begin, end, offset, threshold);
}

// Runs the greedy pass on every class run. `order` maps a grouped position to the original box
// index; returns the suppressed flags by grouped position.
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
  // Classes are independent; split them across threads only when the pairs to compare (at most
  // sum n_c^2 / 2) take milliseconds, as waking the pool costs more than small inputs take.
  double pairs = 0.0;
  for (int64_t g = 0; g < num_groups; ++g) {
    const double size = static_cast<double>(group_start[g + 1] - group_start[g]);
    pairs += 0.5 * size * size;
  }
  const int64_t grain = pairs >= 8.0e6 ? 1 : std::max<int64_t>(num_groups, 1);
  at::parallel_for(0, num_groups, grain, [&](int64_t g0, int64_t g1) {
    for (int64_t g = g0; g < g1; ++g) {
      suppress_run_any(
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
  const std::vector<int64_t> perm = score_order(scores_d.const_data_ptr<double>(), n);

  // ranks[k]: score rank of the k-th box in class-grouped order.
  std::vector<int64_t> group_start;
  std::vector<int64_t> ranks;
  if (labels.defined()) {
    ranks = group_by_label(labels, perm, group_start);
  } else {
    ranks.resize(n);
    std::iota(ranks.begin(), ranks.end(), int64_t(0));
    group_start = {0, n};
  }
  std::vector<int64_t> order(n);
  for (int64_t k = 0; k < n; ++k) {
    order[k] = perm[ranks[k]];
  }

  std::vector<uint8_t> suppressed;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, boxes_c.scalar_type(), "nms_cpu", [&] {
    suppressed = suppress_all<scalar_t>(boxes_c, order, group_start, iou_threshold, legacy);
  });

  // Back to score order: walking the ranks merges the classes without another sort.
  std::vector<uint8_t> suppressed_by_rank(n);
  for (int64_t k = 0; k < n; ++k) {
    suppressed_by_rank[ranks[k]] = suppressed[k];
  }
  int64_t num_kept = 0;
  for (int64_t r = 0; r < n; ++r) {
    num_kept += !suppressed_by_rank[r];
  }
  at::Tensor out = at::empty({num_kept}, boxes.options().dtype(at::kLong));
  int64_t* o = out.mutable_data_ptr<int64_t>();
  for (int64_t r = 0; r < n; ++r) {
    if (!suppressed_by_rank[r]) {
      *o++ = perm[r];
    }
  }
  return out;
}

at::Tensor nms_cpu(const at::Tensor& boxes, const at::Tensor& scores, double iou_threshold, bool legacy) {
  return nms_cpu_impl(boxes, scores, at::Tensor(), iou_threshold, legacy);
}

TORCH_LIBRARY_IMPL(fcos_core, CPU, m) {
  m.impl("nms", &nms_cpu);
}

}  // namespace fcos_core
