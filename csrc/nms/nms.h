// Greedy non-maximum suppression (schema `fcos_core::nms` in csrc/ops.cpp).
//
// Boxes [N, 4] are xyxy; candidates are visited in decreasing score order, equal scores by
// increasing index; a box is dropped when its IoU with a kept box is > iou_threshold. legacy
// widths are x2 - x1 + 1 (original FCOS), otherwise x2 - x1 (torchvision). IoUs are computed in
// at::opmath_type of the boxes' dtype (float for half/bfloat16) with exactly the operations of
// fcos_core.layers.nms.nms_reference, so every backend returns the same indices.
//
// The kernels are registered with the dispatcher (TORCH_LIBRARY_IMPL) by nms_cpu.cpp and
// nms_cuda.cu; ml_nms (csrc/ml_nms) reuses the *_impl functions with a labels tensor.
#pragma once

#include <ATen/ATen.h>

#include <cmath>
#include <limits>

namespace fcos_core {

at::Tensor nms_cpu(const at::Tensor& boxes, const at::Tensor& scores, double iou_threshold, bool legacy);

// Shared by nms and ml_nms: an undefined `labels` means a single class; otherwise boxes with
// different labels (integer or floating, compared for equality) never suppress each other.
at::Tensor nms_cpu_impl(
    const at::Tensor& boxes,
    const at::Tensor& scores,
    const at::Tensor& labels,
    double iou_threshold,
    bool legacy);

#ifdef WITH_CUDA
at::Tensor nms_cuda(const at::Tensor& boxes, const at::Tensor& scores, double iou_threshold, bool legacy);

at::Tensor nms_cuda_impl(
    const at::Tensor& boxes,
    const at::Tensor& scores,
    const at::Tensor& labels,
    double iou_threshold,
    bool legacy);
#endif

namespace nms_detail {

// The largest T not above t, so that `iou > threshold_below<T>(t)` computed in T gives the same
// answer as `(double)iou > t` (the comparison of the reference and of torchvision's CPU kernel):
// a T strictly above the rounded-down threshold is at least the next T, which is above t.
template <typename T>
inline T threshold_below(double t) {
  T r = static_cast<T>(t);
  if (static_cast<double>(r) > t) {
    r = std::nextafter(r, -std::numeric_limits<T>::infinity());
  }
  return r;
}

inline void check_inputs(const at::Tensor& boxes, const at::Tensor& scores, const at::Tensor& labels) {
  TORCH_CHECK(
      boxes.dim() == 2 && boxes.size(1) == 4, "nms: boxes must have shape [N, 4] (x1, y1, x2, y2), got ",
      boxes.sizes());
  TORCH_CHECK(boxes.is_floating_point(), "nms: boxes must be floating point, got ", boxes.scalar_type());
  TORCH_CHECK(
      scores.dim() == 1 && scores.size(0) == boxes.size(0), "nms: scores must have shape [", boxes.size(0),
      "], got ", scores.sizes());
  TORCH_CHECK(scores.is_floating_point(), "nms: scores must be floating point, got ", scores.scalar_type());
  TORCH_CHECK(boxes.device() == scores.device(), "nms: boxes and scores must be on one device");
  if (labels.defined()) {
    TORCH_CHECK(
        labels.dim() == 1 && labels.size(0) == boxes.size(0), "ml_nms: labels must have shape [",
        boxes.size(0), "], got ", labels.sizes());
    TORCH_CHECK(labels.device() == boxes.device(), "ml_nms: labels and boxes must be on one device");
  }
}

}  // namespace nms_detail
}  // namespace fcos_core
