// CUDA class-aware NMS: the bitmask NMS of csrc/nms/nms_cuda.cu with the labels passed to the mask
// kernel, where boxes of different labels get no overlap bit. Same result as the CPU kernel.
#include "ml_nms/ml_nms.h"

#include <torch/library.h>

#include "nms/nms.h"

namespace fcos_core {

at::Tensor ml_nms_cuda(
    const at::Tensor& boxes,
    const at::Tensor& scores,
    const at::Tensor& labels,
    double iou_threshold,
    bool legacy) {
  TORCH_CHECK(labels.defined(), "ml_nms: labels must be a tensor");
  return nms_cuda_impl(boxes, scores, labels, iou_threshold, legacy);
}

TORCH_LIBRARY_IMPL(fcos_core, CUDA, m) {
  m.impl("ml_nms", &ml_nms_cuda);
}

}  // namespace fcos_core
