// CUDA sigmoid focal loss (formulas in sigmoid_focal_loss.h).
//
// Forward: a grid-stride kernel sums the element losses of each thread, reduces them per block in
// shared memory (a fixed tree) into one partial per block, and a one-block kernel adds the
// partials in order: no atomics, so the result is the same on every run. Backward: a grid-stride
// elementwise kernel. Element math runs in at::opmath_type (float for half/bfloat16), sums in
// double.
#include "sigmoid_focal_loss/sigmoid_focal_loss.h"

#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>

namespace fcos_core {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxForwardBlocks = 1024;  // partials reduced by one block in the second pass
constexpr int64_t kMaxBackwardBlocks = 65535;

template <typename T>
__device__ __forceinline__ T pow_gamma(T base, T gamma, bool gamma_is_two) {
  return gamma_is_two ? base * base : ::pow(base, gamma);
}

// Loss of one element; t is the row's label (>= 0), c its column.
template <typename T>
__device__ __forceinline__ T element_loss(T x, int64_t t, int64_t c, T gamma, T alpha, bool gamma_is_two) {
  const T e = ::exp(-::abs(x));
  const T l = ::log1p(e);
  if (t == c + 1) {
    const T q = x >= T(0) ? e / (T(1) + e) : T(1) / (T(1) + e);
    const T softplus_neg = (x < T(0) ? -x : T(0)) + l;  // -log(p)
    return alpha * pow_gamma(q, gamma, gamma_is_two) * softplus_neg;
  }
  const T p = x >= T(0) ? T(1) / (T(1) + e) : e / (T(1) + e);
  const T softplus_pos = (x > T(0) ? x : T(0)) + l;  // -log(q)
  return (T(1) - alpha) * pow_gamma(p, gamma, gamma_is_two) * softplus_pos;
}

template <typename T>
__device__ __forceinline__ T element_grad(T x, int64_t t, int64_t c, T gamma, T alpha, bool gamma_is_two) {
  const T e = ::exp(-::abs(x));
  const T l = ::log1p(e);
  const T p = x >= T(0) ? T(1) / (T(1) + e) : e / (T(1) + e);
  const T q = x >= T(0) ? e / (T(1) + e) : T(1) / (T(1) + e);
  if (t == c + 1) {
    const T softplus_neg = (x < T(0) ? -x : T(0)) + l;
    return alpha * pow_gamma(q, gamma, gamma_is_two) * (-gamma * p * softplus_neg - q);
  }
  const T softplus_pos = (x > T(0) ? x : T(0)) + l;
  return (T(1) - alpha) * pow_gamma(p, gamma, gamma_is_two) * (p + gamma * q * softplus_pos);
}

// Sums `value` over the block (blockDim.x == kThreads) in a fixed order; thread 0 gets the total.
__device__ __forceinline__ double block_sum(double value, double* shared) {
  shared[threadIdx.x] = value;
  __syncthreads();
  for (int stride = kThreads / 2; stride > 0; stride >>= 1) {
    if (threadIdx.x < stride) {
      shared[threadIdx.x] += shared[threadIdx.x + stride];
    }
    __syncthreads();
  }
  return shared[0];
}

template <typename scalar_t>
__global__ void focal_forward_partials_kernel(
    const scalar_t* __restrict__ logits,
    const int64_t* __restrict__ labels,
    int64_t total,
    int64_t num_classes,
    double gamma,
    double alpha,
    double* __restrict__ partials) {
  using T = at::opmath_type<scalar_t>;
  __shared__ double shared[kThreads];
  const bool gamma_is_two = gamma == 2.0;
  double sum = 0.0;
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < total; k += int64_t(gridDim.x) * blockDim.x) {
    const int64_t row = k / num_classes;
    const int64_t t = labels[row];
    if (t >= 0) {
      sum += static_cast<double>(element_loss<T>(
          static_cast<T>(logits[k]), t, k - row * num_classes, static_cast<T>(gamma), static_cast<T>(alpha),
          gamma_is_two));
    }
  }
  const double block_total = block_sum(sum, shared);
  if (threadIdx.x == 0) {
    partials[blockIdx.x] = block_total;
  }
}

template <typename scalar_t>
__global__ void focal_forward_final_kernel(const double* __restrict__ partials, int64_t count, scalar_t* __restrict__ out) {
  __shared__ double shared[kThreads];
  double sum = 0.0;
  for (int64_t k = threadIdx.x; k < count; k += kThreads) {
    sum += partials[k];
  }
  const double total = block_sum(sum, shared);
  if (threadIdx.x == 0) {
    *out = static_cast<scalar_t>(static_cast<at::opmath_type<scalar_t>>(total));
  }
}

template <typename scalar_t>
__global__ void focal_backward_kernel(
    const scalar_t* __restrict__ logits,
    const int64_t* __restrict__ labels,
    const double* __restrict__ grad_output,
    int64_t total,
    int64_t num_classes,
    double gamma,
    double alpha,
    scalar_t* __restrict__ grad) {
  using T = at::opmath_type<scalar_t>;
  const bool gamma_is_two = gamma == 2.0;
  const T go = static_cast<T>(*grad_output);
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < total; k += int64_t(gridDim.x) * blockDim.x) {
    const int64_t row = k / num_classes;
    const int64_t t = labels[row];
    T g = T(0);
    if (t >= 0) {
      g = go *
          element_grad<T>(
              static_cast<T>(logits[k]), t, k - row * num_classes, static_cast<T>(gamma), static_cast<T>(alpha),
              gamma_is_two);
    }
    grad[k] = static_cast<scalar_t>(g);
  }
}

int64_t num_blocks(int64_t total, int64_t max_blocks) {
  return std::max<int64_t>(1, std::min<int64_t>((total + kThreads - 1) / kThreads, max_blocks));
}

}  // namespace

at::Tensor sigmoid_focal_loss_forward_cuda(const at::Tensor& logits, const at::Tensor& labels, double gamma, double alpha) {
  focal_detail::check_inputs(logits, labels, gamma);
  TORCH_CHECK(logits.is_cuda(), "sigmoid_focal_loss_forward_cuda: expected CUDA tensors");
  const c10::cuda::CUDAGuard guard(logits.device());
  const at::Tensor x = logits.contiguous();
  const at::Tensor lab = labels.to(at::kLong).contiguous();
  const int64_t total = x.numel();
  const int64_t num_classes = x.size(1);
  at::Tensor out = at::zeros({}, logits.options());
  if (total == 0) {
    return out;
  }
  // The block count depends only on the input size, so the summation order is fixed.
  const int64_t blocks = num_blocks(total, kMaxForwardBlocks);
  at::Tensor partials = at::empty({blocks}, logits.options().dtype(at::kDouble));
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "sigmoid_focal_loss_forward_cuda", [&] {
    focal_forward_partials_kernel<scalar_t><<<blocks, kThreads, 0, stream>>>(
        x.const_data_ptr<scalar_t>(), lab.const_data_ptr<int64_t>(), total, num_classes, gamma, alpha,
        partials.mutable_data_ptr<double>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    focal_forward_final_kernel<scalar_t><<<1, kThreads, 0, stream>>>(
        partials.const_data_ptr<double>(), blocks, out.mutable_data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

at::Tensor sigmoid_focal_loss_backward_cuda(
    const at::Tensor& logits,
    const at::Tensor& labels,
    const at::Tensor& grad_output,
    double gamma,
    double alpha) {
  focal_detail::check_inputs(logits, labels, gamma);
  TORCH_CHECK(logits.is_cuda(), "sigmoid_focal_loss_backward_cuda: expected CUDA tensors");
  TORCH_CHECK(grad_output.numel() == 1, "sigmoid_focal_loss_backward: grad_output must have one element, got ",
              grad_output.sizes());
  const c10::cuda::CUDAGuard guard(logits.device());
  const at::Tensor x = logits.contiguous();
  const at::Tensor lab = labels.to(at::kLong).contiguous();
  const at::Tensor go = grad_output.to(x.device(), at::kDouble).contiguous();
  at::Tensor grad = at::empty_like(x, at::MemoryFormat::Contiguous);
  const int64_t total = x.numel();
  if (total == 0) {
    return grad;
  }
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "sigmoid_focal_loss_backward_cuda", [&] {
    focal_backward_kernel<scalar_t><<<num_blocks(total, kMaxBackwardBlocks), kThreads, 0, stream>>>(
        x.const_data_ptr<scalar_t>(), lab.const_data_ptr<int64_t>(), go.const_data_ptr<double>(), total,
        x.size(1), gamma, alpha, grad.mutable_data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return grad;
}

TORCH_LIBRARY_IMPL(fcos_core, CUDA, m) {
  m.impl("sigmoid_focal_loss_forward", &sigmoid_focal_loss_forward_cuda);
  m.impl("sigmoid_focal_loss_backward", &sigmoid_focal_loss_backward_cuda);
}

}  // namespace fcos_core
