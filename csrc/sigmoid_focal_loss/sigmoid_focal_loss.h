// Sigmoid focal loss (Lin et al. 2017; FCOS paper Sec. 2.2), schemas
// `fcos_core::sigmoid_focal_loss_forward` / `_backward` in csrc/ops.cpp.
//
// logits [N, C], labels [N] (integer): label c in 1..C makes column c-1 positive, every other
// column of a row with label >= 0 is negative, rows with label < 0 are ignored. With
// p = sigmoid(x), q = 1 - p:
//   positive: -alpha * q^gamma * log(p)           d/dx =  alpha * q^gamma * (gamma * p * log(p) - q)
//   negative: -(1 - alpha) * p^gamma * log(q)     d/dx =  (1 - alpha) * p^gamma * (p - gamma * q * log(q))
// computed from e = exp(-|x|) with log(p) = -softplus(-x), log(q) = -softplus(x). The forward
// returns the sum (0-dim, dtype of logits) without an [N, C] intermediate; the backward returns
// grad_output * d(sum)/d(logits), [N, C] in the dtype of logits. Half and bfloat16 are computed in
// float; sums are accumulated in double (CPU) or per-block partials (CUDA), deterministically.
#pragma once

#include <ATen/ATen.h>

namespace fcos_core {

at::Tensor sigmoid_focal_loss_forward_cpu(const at::Tensor& logits, const at::Tensor& labels, double gamma, double alpha);

at::Tensor sigmoid_focal_loss_backward_cpu(
    const at::Tensor& logits,
    const at::Tensor& labels,
    const at::Tensor& grad_output,
    double gamma,
    double alpha);

#ifdef WITH_CUDA
at::Tensor sigmoid_focal_loss_forward_cuda(
    const at::Tensor& logits,
    const at::Tensor& labels,
    double gamma,
    double alpha);

at::Tensor sigmoid_focal_loss_backward_cuda(
    const at::Tensor& logits,
    const at::Tensor& labels,
    const at::Tensor& grad_output,
    double gamma,
    double alpha);
#endif

namespace focal_detail {

inline void check_inputs(const at::Tensor& logits, const at::Tensor& labels, double gamma) {
  TORCH_CHECK(logits.dim() == 2, "sigmoid_focal_loss: logits must have shape [N, C], got ", logits.sizes());
  TORCH_CHECK(
      logits.is_floating_point(), "sigmoid_focal_loss: logits must be floating point, got ", logits.scalar_type());
  TORCH_CHECK(
      labels.dim() == 1 && labels.size(0) == logits.size(0), "sigmoid_focal_loss: labels must have shape [",
      logits.size(0), "], got ", labels.sizes());
  TORCH_CHECK(
      !labels.is_floating_point() && !labels.is_complex() && labels.scalar_type() != at::kBool,
      "sigmoid_focal_loss: labels must be an integer tensor, got ", labels.scalar_type());
  TORCH_CHECK(logits.device() == labels.device(), "sigmoid_focal_loss: logits and labels must be on one device");
  TORCH_CHECK(gamma >= 0, "sigmoid_focal_loss: gamma must be >= 0, got ", gamma);
}

}  // namespace focal_detail
}  // namespace fcos_core
