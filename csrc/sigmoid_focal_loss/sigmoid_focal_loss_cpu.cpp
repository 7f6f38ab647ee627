// CPU sigmoid focal loss (formulas in sigmoid_focal_loss.h).
//
// Rows are processed in fixed blocks (independent of the thread count) with at::parallel_for;
// each block's loss is summed in double and the block sums are added in block order, so the result
// does not depend on scheduling. Every row is first treated as all-negative by a branch-free loop
// over its C columns, then its one positive column (if any) is corrected with a scalar computation.
//
// float32 (the training case) has a SIMD path: exp and log1p are short polynomials (one exp and
// one division per element) on GCC vector extensions, built for AVX2+FMA, FMA/AVX and baseline
// x86-64 and chosen at load time (target_clones). float64 (gradcheck), float16 and bfloat16 use
// the scalar std:: functions in at::opmath_type.
#include "sigmoid_focal_loss/sigmoid_focal_loss.h"

#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

namespace fcos_core {
namespace {

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define FCOS_FOCAL_CLONES __attribute__((target_clones("arch=haswell", "fma", "default")))
#else
#define FCOS_FOCAL_CLONES
#endif

// ---------------------------------------------------------------------------------------------
// Element math shared by both paths: given x, e = exp(-|x|) and l = log1p(e), the softplus values
// are softplus(x) = max(x, 0) + l and softplus(-x) = max(-x, 0) + l.

template <typename T>
inline T pow_gamma(T base, T gamma, bool gamma_is_two) {
  return gamma_is_two ? base * base : std::pow(base, gamma);
}

// Positive-column loss and gradient (scalar, once per row), in double.
inline double positive_loss(double x, double gamma, double alpha) {
  const double e = std::exp(-std::abs(x));
  const double q = x >= 0 ? e / (1 + e) : 1 / (1 + e);
  const double softplus_neg = std::max(-x, 0.0) + std::log1p(e);
  return alpha * std::pow(q, gamma) * softplus_neg;
}

inline double positive_grad(double x, double gamma, double alpha) {
  const double e = std::exp(-std::abs(x));
  const double p = x >= 0 ? 1 / (1 + e) : e / (1 + e);
  const double q = x >= 0 ? e / (1 + e) : 1 / (1 + e);
  const double softplus_neg = std::max(-x, 0.0) + std::log1p(e);
  return alpha * std::pow(q, gamma) * (-gamma * p * softplus_neg - q);
}

// ---------------------------------------------------------------------------------------------
// float32 SIMD helpers, written with GCC vector extensions (8 lanes: one AVX register in the AVX
// clones, two SSE registers in the baseline one). Vectors are passed by reference so that no
// function has a 32-byte vector in its ABI.

typedef float vf __attribute__((vector_size(32)));
typedef int32_t vi __attribute__((vector_size(32)));
constexpr int64_t kLanes = 8;

#define FCOS_FOCAL_INLINE inline __attribute__((always_inline))

FCOS_FOCAL_INLINE void load(const float* src, vf& v) {
  std::memcpy(&v, src, sizeof(vf));
}

FCOS_FOCAL_INLINE void store(const vf& v, float* dst) {
  std::memcpy(dst, &v, sizeof(vf));
}

// out = exp(y) for y <= 0 (Cephes expf: range reduction by ln 2, degree-6 polynomial, 2^n from
// the exponent bits). Inputs below -87 are clamped there so that 2^n stays a normal float;
// exp(-87) is 1.6e-38 and the loss terms it feeds are of that order, so nothing visible is lost.
FCOS_FOCAL_INLINE void exp_nonpositive(const vf& y_in, vf& out) {
  const vf zero = {};
  const vf lo = zero - 87.0f;
  const vf y = y_in > lo ? y_in : lo;
  vf fn = y * 1.44269504088896341f;
  fn = (fn + 12582912.0f) - 12582912.0f;  // round to nearest integer (|fn| < 2^22)
  vf r = y - fn * 0.693359375f;
  r = r - fn * -2.12194440e-4f;
  vf p = zero + 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r + 1.0f;
  const vi n = __builtin_convertvector(fn, vi);
  out = p * reinterpret_cast<vf>((n + 127) << 23);
}

// With e = exp(-|x|): p = sigmoid(x), q = 1 - p, l = log1p(e), softplus(x) = max(x, 0) + l and
// softplus(-x) = max(-x, 0) + l. log1p(e) = 2 atanh(u) with u = e / (2 + e) in [0, 1/3]: the series
// to u^15 is accurate to 1e-9 relative, also for tiny e. 1 / (1 + e) and u share one division.
FCOS_FOCAL_INLINE void sigmoid_softplus(const vf& x, vf& p, vf& q, vf& softplus_pos, vf& softplus_neg) {
  const vf zero = {};
  const vi nonneg = x >= zero;
  const vf ax = nonneg ? x : -x;
  vf e;
  exp_nonpositive(-ax, e);
  const vf one_e = e + 1.0f;
  const vf two_e = e + 2.0f;
  const vf inv = 1.0f / (one_e * two_e);
  const vf sig = two_e * inv;  // 1 / (1 + e)
  const vf u = e * one_e * inv;  // e / (2 + e)
  const vf u2 = u * u;
  vf s = zero + 1.0f / 15.0f;
  s = s * u2 + 1.0f / 13.0f;
  s = s * u2 + 1.0f / 11.0f;
  s = s * u2 + 1.0f / 9.0f;
  s = s * u2 + 1.0f / 7.0f;
  s = s * u2 + 1.0f / 5.0f;
  s = s * u2 + 1.0f / 3.0f;
  s = s * u2 + 1.0f;
  const vf l = 2.0f * u * s;
  const vf e_sig = e * sig;
  p = nonneg ? sig : e_sig;
  q = nonneg ? e_sig : sig;
  softplus_pos = (nonneg ? x : zero) + l;  // -log(q)
  softplus_neg = (nonneg ? zero : -x) + l;  // -log(p)
}

// p^gamma: p * p when kGammaTwo, else exp(-gamma * softplus(-x)).
template <bool kGammaTwo>
FCOS_FOCAL_INLINE void pow_gamma_v(const vf& p, const vf& softplus_neg, float gamma, vf& out) {
  if constexpr (kGammaTwo) {
    out = p * p;
  } else {
    exp_nonpositive(softplus_neg * -gamma, out);
  }
}

// Sum of the negative-term losses of one row, the positive column `pos` excluded.
template <bool kGammaTwo>
FCOS_FOCAL_INLINE double negative_loss_row_f32(const float* x, int64_t C, int64_t pos, float gamma, float w) {
  const vf zero = {};
  const vi lane = {0, 1, 2, 3, 4, 5, 6, 7};
  vf acc = zero;
  for (int64_t c = 0; c < C; c += kLanes) {
    vf xv = zero;
    if (c + kLanes <= C) {
      load(x + c, xv);
    } else {
      std::memcpy(&xv, x + c, sizeof(float) * (C - c));
    }
    vf p, q, sp, sn, pg;
    sigmoid_softplus(xv, p, q, sp, sn);
    pow_gamma_v<kGammaTwo>(p, sn, gamma, pg);
    const vi col = lane + static_cast<int32_t>(c);
    const vi skip = (col == static_cast<int32_t>(pos)) | (col >= static_cast<int32_t>(C));
    acc += skip ? zero : pg * sp;
  }
  double total = 0.0;
  for (int k = 0; k < kLanes; ++k) {
    total += static_cast<double>(acc[k]);
  }
  return total * static_cast<double>(w);
}

// Negative-term gradients of one row times (1 - alpha) * grad_output into g[0..C) (the caller
// overwrites the positive column).
template <bool kGammaTwo>
FCOS_FOCAL_INLINE void negative_grad_row_f32(const float* x, int64_t C, float gamma, float wgo, float* g) {
  const vf zero = {};
  for (int64_t c = 0; c < C; c += kLanes) {
    const bool full = c + kLanes <= C;
    vf xv = zero;
    if (full) {
      load(x + c, xv);
    } else {
      std::memcpy(&xv, x + c, sizeof(float) * (C - c));
    }
    vf p, q, sp, sn, pg;
    sigmoid_softplus(xv, p, q, sp, sn);
    pow_gamma_v<kGammaTwo>(p, sn, gamma, pg);
    const vf gv = (wgo * pg) * (p + (kGammaTwo ? 2.0f : gamma) * q * sp);
    if (full) {
      store(gv, g + c);
    } else {
      std::memcpy(g + c, &gv, sizeof(float) * (C - c));
    }
  }
}

struct Params {
  int64_t C;
  double gamma;
  double alpha;
  bool gamma_is_two;
};

// Loss of rows [r0, r1), summed in double.
template <bool kGammaTwo>
FCOS_FOCAL_INLINE double forward_rows_f32(const float* x, const int64_t* labels, int64_t r0, int64_t r1, const Params& P) {
  const int64_t C = P.C;
  const float w = static_cast<float>(1.0 - P.alpha);
  const float gamma = static_cast<float>(P.gamma);
  double total = 0.0;
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t t = labels[r];
    if (t < 0) {
      continue;
    }
    const float* xr = x + r * C;
    const int64_t pos = t >= 1 && t <= C ? t - 1 : -1;
    total += negative_loss_row_f32<kGammaTwo>(xr, C, pos, gamma, w);
    if (pos >= 0) {
      total += positive_loss(xr[pos], P.gamma, P.alpha);
    }
  }
  return total;
}

FCOS_FOCAL_CLONES double forward_rows_f32_g2(const float* x, const int64_t* l, int64_t r0, int64_t r1, const Params& P) {
  return forward_rows_f32<true>(x, l, r0, r1, P);
}

FCOS_FOCAL_CLONES double forward_rows_f32_gany(const float* x, const int64_t* l, int64_t r0, int64_t r1, const Params& P) {
  return forward_rows_f32<false>(x, l, r0, r1, P);
}

template <bool kGammaTwo>
FCOS_FOCAL_INLINE void backward_rows_f32(const float* x, const int64_t* labels, int64_t r0, int64_t r1, const Params& P, double go, float* grad) {
  const int64_t C = P.C;
  const float wgo = static_cast<float>((1.0 - P.alpha) * go);
  const float gamma = static_cast<float>(P.gamma);
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t t = labels[r];
    float* gr = grad + r * C;
    if (t < 0) {
      std::fill(gr, gr + C, 0.0f);
      continue;
    }
    const float* xr = x + r * C;
    negative_grad_row_f32<kGammaTwo>(xr, C, gamma, wgo, gr);
    if (t >= 1 && t <= C) {
      gr[t - 1] = static_cast<float>(go * positive_grad(xr[t - 1], P.gamma, P.alpha));
    }
  }
}

FCOS_FOCAL_CLONES void backward_rows_f32_g2(const float* x, const int64_t* l, int64_t r0, int64_t r1, const Params& P, double go, float* g) {
  backward_rows_f32<true>(x, l, r0, r1, P, go, g);
}

FCOS_FOCAL_CLONES void backward_rows_f32_gany(const float* x, const int64_t* l, int64_t r0, int64_t r1, const Params& P, double go, float* g) {
  backward_rows_f32<false>(x, l, r0, r1, P, go, g);
}

// ---------------------------------------------------------------------------------------------
// Generic scalar path (float64, float16, bfloat16) in at::opmath_type.

template <typename scalar_t>
double forward_rows_generic(const scalar_t* x, const int64_t* labels, int64_t r0, int64_t r1, const Params& P) {
  using T = at::opmath_type<scalar_t>;
  const T gamma = static_cast<T>(P.gamma);
  const T w = static_cast<T>(1.0 - P.alpha);
  double total = 0.0;
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t t = labels[r];
    if (t < 0) {
      continue;
    }
    const scalar_t* xr = x + r * P.C;
    for (int64_t c = 0; c < P.C; ++c) {
      const T xc = static_cast<T>(xr[c]);
      if (c + 1 == t) {
        total += positive_loss(static_cast<double>(xc), P.gamma, P.alpha);
        continue;
      }
      const T e = std::exp(-std::abs(xc));
      const T p = xc >= 0 ? T(1) / (T(1) + e) : e / (T(1) + e);
      const T softplus = std::max(xc, T(0)) + std::log1p(e);
      total += static_cast<double>(w * pow_gamma(p, gamma, P.gamma_is_two) * softplus);
    }
  }
  return total;
}

template <typename scalar_t>
void backward_rows_generic(const scalar_t* x, const int64_t* labels, int64_t r0, int64_t r1, const Params& P, double go, scalar_t* grad) {
  using T = at::opmath_type<scalar_t>;
  const T gamma = static_cast<T>(P.gamma);
  const T wgo = static_cast<T>((1.0 - P.alpha) * go);
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t t = labels[r];
    const scalar_t* xr = x + r * P.C;
    scalar_t* gr = grad + r * P.C;
    for (int64_t c = 0; c < P.C; ++c) {
      const T xc = static_cast<T>(xr[c]);
      T g;
      if (t < 0) {
        g = T(0);
      } else if (c + 1 == t) {
        g = static_cast<T>(go * positive_grad(static_cast<double>(xc), P.gamma, P.alpha));
      } else {
        const T e = std::exp(-std::abs(xc));
        const T p = xc >= 0 ? T(1) / (T(1) + e) : e / (T(1) + e);
        const T q = xc >= 0 ? e / (T(1) + e) : T(1) / (T(1) + e);
        const T softplus = std::max(xc, T(0)) + std::log1p(e);
        g = wgo * pow_gamma(p, gamma, P.gamma_is_two) * (p + gamma * q * softplus);
      }
      gr[c] = static_cast<scalar_t>(g);
    }
  }
}

// Per-dtype entry points: float32 takes the vectorised path, the rest the generic one.
template <typename scalar_t>
double forward_rows(const scalar_t* x, const int64_t* l, int64_t r0, int64_t r1, const Params& P) {
  return forward_rows_generic<scalar_t>(x, l, r0, r1, P);
}

inline double forward_rows(const float* x, const int64_t* l, int64_t r0, int64_t r1, const Params& P) {
  return P.gamma_is_two ? forward_rows_f32_g2(x, l, r0, r1, P) : forward_rows_f32_gany(x, l, r0, r1, P);
}

template <typename scalar_t>
void backward_rows(const scalar_t* x, const int64_t* l, int64_t r0, int64_t r1, const Params& P, double go, scalar_t* g) {
  backward_rows_generic<scalar_t>(x, l, r0, r1, P, go, g);
}

inline void backward_rows(const float* x, const int64_t* l, int64_t r0, int64_t r1, const Params& P, double go, float* g) {
  if (P.gamma_is_two) {
    backward_rows_f32_g2(x, l, r0, r1, P, go, g);
  } else {
    backward_rows_f32_gany(x, l, r0, r1, P, go, g);
  }
}

// Fixed row blocks of about 16K elements: the partition, hence the summation order, depends only
// on N and C.
inline int64_t rows_per_block(int64_t C) {
  return std::max<int64_t>(1, 16384 / std::max<int64_t>(C, 1));
}

}  // namespace

at::Tensor sigmoid_focal_loss_forward_cpu(const at::Tensor& logits, const at::Tensor& labels, double gamma, double alpha) {
  focal_detail::check_inputs(logits, labels, gamma);
  TORCH_CHECK(logits.device().is_cpu(), "sigmoid_focal_loss_forward_cpu: expected CPU tensors");
  const at::Tensor x = logits.contiguous();
  const at::Tensor lab = labels.to(at::kLong).contiguous();
  const int64_t N = x.size(0);
  const Params P{x.size(1), gamma, alpha, gamma == 2.0};
  TORCH_CHECK(P.C < (int64_t(1) << 30), "sigmoid_focal_loss: too many classes: ", P.C);
  const int64_t block = rows_per_block(P.C);
  const int64_t num_blocks = (N + block - 1) / block;
  std::vector<double> partial(num_blocks, 0.0);
  const int64_t* l = lab.const_data_ptr<int64_t>();

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "sigmoid_focal_loss_forward_cpu", [&] {
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    at::parallel_for(0, num_blocks, 1, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        const int64_t r0 = b * block;
        const int64_t r1 = std::min(N, r0 + block);
        partial[b] = forward_rows(xp, l, r0, r1, P);
      }
    });
  });
  double total = 0.0;
  for (double v : partial) {
    total += v;
  }
  return at::scalar_tensor(total, logits.options());
}

at::Tensor sigmoid_focal_loss_backward_cpu(
    const at::Tensor& logits,
    const at::Tensor& labels,
    const at::Tensor& grad_output,
    double gamma,
    double alpha) {
  focal_detail::check_inputs(logits, labels, gamma);
  TORCH_CHECK(logits.device().is_cpu(), "sigmoid_focal_loss_backward_cpu: expected CPU tensors");
  TORCH_CHECK(grad_output.numel() == 1, "sigmoid_focal_loss_backward: grad_output must have one element, got ",
              grad_output.sizes());
  const at::Tensor x = logits.contiguous();
  const at::Tensor lab = labels.to(at::kLong).contiguous();
  const int64_t N = x.size(0);
  const Params P{x.size(1), gamma, alpha, gamma == 2.0};
  const double go = grad_output.item<double>();
  at::Tensor grad = at::empty_like(x, at::MemoryFormat::Contiguous);
  const int64_t block = rows_per_block(P.C);
  const int64_t num_blocks = (N + block - 1) / block;
  const int64_t* l = lab.const_data_ptr<int64_t>();

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "sigmoid_focal_loss_backward_cpu", [&] {
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    scalar_t* gp = grad.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, num_blocks, 1, [&](int64_t b0, int64_t b1) {
      const int64_t r0 = b0 * block;
      const int64_t r1 = std::min(N, b1 * block);
      backward_rows(xp, l, r0, r1, P, go, gp);
    });
  });
  return grad;
}

TORCH_LIBRARY_IMPL(fcos_core, CPU, m) {
  m.impl("sigmoid_focal_loss_forward", &sigmoid_focal_loss_forward_cpu);
  m.impl("sigmoid_focal_loss_backward", &sigmoid_focal_loss_backward_cpu);
}

}  // namespace fcos_core
