// 3x3 stride-1 convolution by Winograd's minimal filtering F(4x4, 3x3) (Lavin & Gray, "Fast
// Algorithms for Convolutional Neural Networks", CVPR 2016), schema `fcos_core::winograd_conv3x3` in
// csrc/ops.cpp. Inference only: there is no backward.
//
// With d a 6x6 input tile, g a 3x3 filter and interpolation points 0, 1, -1, 2, -2, inf:
//   Y (4x4) = A^T [ (G g G^T) (.) (B^T d B) ] A
// The filter transform U = G g G^T is done once, in Python (fcos_core/layers/winograd.py), and
// arrives as weight_wino [36, Cin, Cout]; this kernel transforms the input tiles into V [36, T, Cin]
// (T = N * ceil(H/4) * ceil(W/4) tiles, zero padding 1), multiplies V[k] @ U[k] for the 36
// components in one batched GEMM (at::bmm: MKL / oneDNN), and transforms the products back into the
// [N, Cout, H, W] output (channels_last) with the bias and an optional ReLU added. It does 2.25x
// fewer multiplications than the direct convolution in the GEMM, plus the transforms.
#pragma once

#include <ATen/ATen.h>

#include <optional>

namespace fcos_core {

// input [N, Cin, H, W] float32 / float64 (any memory format), weight_wino [36, Cin, Cout] of the same
// dtype, bias [Cout] or none. Returns [N, Cout, H, W] in channels_last memory format.
at::Tensor winograd_conv3x3_cpu(
    const at::Tensor& input,
    const at::Tensor& weight_wino,
    const std::optional<at::Tensor>& bias,
    bool relu);

}  // namespace fcos_core
