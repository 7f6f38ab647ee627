// CPU class-aware NMS: one sort groups the boxes by label, then greedy NMS runs per class on
// contiguous arrays (only same-class pairs are compared) and the kept boxes are merged back into
// decreasing score order. The work is done by nms_cpu_impl (csrc/nms/nms_cpu.cpp).
#include "ml_nms/ml_nms.h"

#include <torch/library.h>

#include "nms/nms.h"

namespace fcos_core {

at::Tensor ml_nms_cpu(
    const at::Tensor& boxes,
    const at::Tensor& scores,
    const at::Tensor& labels,
    double iou_threshold,
    bool legacy) {
  TORCH_CHECK(labels.defined(), "ml_nms: labels must be a tensor");
  return nms_cpu_impl(boxes, scores, labels, iou_threshold, legacy);
}

TORCH_LIBRARY_IMPL(fcos_core, CPU, m) {
  m.impl("ml_nms", &ml_nms_cpu);
}

}  // namespace fcos_core
