// Class-aware greedy NMS in one call (schema `fcos_core::ml_nms` in csrc/ops.cpp): exactly the
// NMS of csrc/nms/nms.h, except that boxes with different labels never suppress each other.
// Labels may be integer or floating tensors. The kernels reuse nms_cpu_impl / nms_cuda_impl.
#pragma once

#include <ATen/ATen.h>

namespace fcos_core {

at::Tensor ml_nms_cpu(
    const at::Tensor& boxes,
    const at::Tensor& scores,
    const at::Tensor& labels,
    double iou_threshold,
    bool legacy);

#ifdef WITH_CUDA
at::Tensor ml_nms_cuda(
    const at::Tensor& boxes,
    const at::Tensor& scores,
    const at::Tensor& labels,
    double iou_threshold,
    bool legacy);
#endif

}  // namespace fcos_core
