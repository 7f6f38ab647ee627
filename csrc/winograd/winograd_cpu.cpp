// CPU kernel of fcos_core::winograd_conv3x3 (see winograd.h for the algorithm).
//
// Both transforms work on one tile at a time, on blocks of kChannelBlock channels held in small
// local arrays (the tile's 36 values per channel), so that every inner loop runs over contiguous
// channels of a channels_last tensor with constant coefficients and the compiler vectorises it.
#include "winograd/winograd.h"

#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>

namespace fcos_core {
namespace {

constexpr int64_t kChannelBlock = 64;

// The transforms are built for AVX-512, AVX2 and the baseline, picked at load time by the CPU (GCC
// function multi-versioning): the wheel stays portable while the channel loops use wide vectors.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define WINOGRAD_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define WINOGRAD_CLONES
#endif

// Six rows of one column of a tile, `stride` apart, each row n contiguous channels.
template <typename T>
struct Rows6 {
  const T *r0, *r1, *r2, *r3, *r4, *r5;
  Rows6(const T* s, int64_t stride)
      : r0(s), r1(s + stride), r2(s + 2 * stride), r3(s + 3 * stride), r4(s + 4 * stride), r5(s + 5 * stride) {}
};

// B^T d for one column of 6 values: s[k * stride] -> r[k * stride], over n channels.
template <typename T>
inline void input_1d(const T* s, T* r, int64_t stride, int64_t n) {
  const Rows6<T> d(s, stride);
  for (int64_t c = 0; c < n; ++c) {
    const T d0 = d.r0[c], d1 = d.r1[c], d2 = d.r2[c], d3 = d.r3[c], d4 = d.r4[c], d5 = d.r5[c];
    r[c] = T(4) * d0 - T(5) * d2 + d4;
    r[stride + c] = -T(4) * (d1 + d2) + d3 + d4;
    r[2 * stride + c] = T(4) * (d1 - d2) - d3 + d4;
    r[3 * stride + c] = T(2) * (d3 - d1) - d2 + d4;
    r[4 * stride + c] = T(2) * (d1 - d3) - d2 + d4;
    r[5 * stride + c] = T(4) * d1 - T(5) * d3 + d5;
  }
}

// A^T m for one column of 6 values: s[k * stride] -> r[k * stride] (k < 4), over n channels.
template <typename T>
inline void output_1d(const T* s, T* r, int64_t stride, int64_t n) {
  const Rows6<T> m(s, stride);
  for (int64_t c = 0; c < n; ++c) {
    const T p = m.r1[c] + m.r2[c], q = m.r1[c] - m.r2[c], u = m.r3[c] + m.r4[c], v = m.r3[c] - m.r4[c];
    r[c] = m.r0[c] + p + u;
    r[stride + c] = q + T(2) * v;
    r[2 * stride + c] = p + T(4) * u;
    r[3 * stride + c] = q + T(8) * v + m.r5[c];
  }
}

struct Tile {
  int64_t image, y0, x0;  // its image and the first output row and column it covers
};

struct Geometry {
  int64_t n, h, w, tiles_h, tiles_w;
  int64_t tiles() const { return n * tiles_h * tiles_w; }
  Tile tile(int64_t t) const {  // tiles are numbered image by image, row by row
    return {t / (tiles_h * tiles_w), (t / tiles_w) % tiles_h * 4, t % tiles_w * 4};
  }
};

// V[k][t - t0][c] = (B^T d B)[k] for tiles [t0, t1) of the NHWC input x (c in [0, cin)).
template <typename T>
WINOGRAD_CLONES void input_transform(const T* x, T* v, const Geometry& g, int64_t cin, int64_t t0, int64_t t1) {
  T d[36 * kChannelBlock];
  T r[36 * kChannelBlock];
  const int64_t plane = (t1 - t0) * cin;  // stride between the 36 components of V
  for (int64_t t = t0; t < t1; ++t) {
    const Tile tile = g.tile(t);
    for (int64_t c0 = 0; c0 < cin; c0 += kChannelBlock) {
      const int64_t nc = std::min(kChannelBlock, cin - c0);
      for (int64_t i = 0; i < 6; ++i) {
        const int64_t y = tile.y0 - 1 + i;
        for (int64_t j = 0; j < 6; ++j) {
          const int64_t xx = tile.x0 - 1 + j;
          T* dst = d + (i * 6 + j) * kChannelBlock;
          if (y < 0 || y >= g.h || xx < 0 || xx >= g.w) {
            std::fill(dst, dst + nc, T(0));
          } else {
            std::copy_n(x + ((tile.image * g.h + y) * g.w + xx) * cin + c0, nc, dst);
          }
        }
      }
      for (int64_t j = 0; j < 6; ++j) {  // along rows: r[i][j] = sum_k B^T[i][k] d[k][j]
        input_1d(d + j * kChannelBlock, r + j * kChannelBlock, 6 * kChannelBlock, nc);
      }
      for (int64_t i = 0; i < 6; ++i) {  // along columns, into d as scratch
        input_1d(r + i * 6 * kChannelBlock, d + i * 6 * kChannelBlock, kChannelBlock, nc);
      }
      for (int64_t k = 0; k < 36; ++k) {
        std::copy_n(d + k * kChannelBlock, nc, v + k * plane + (t - t0) * cin + c0);
      }
    }
  }
}

// out (NHWC) = A^T M A + bias (then ReLU) for tiles [t0, t1); M[k][t - t0][c] with c in [0, cout).
template <typename T>
WINOGRAD_CLONES void output_transform(
    const T* m, const T* bias, bool relu, T* out, const Geometry& g, int64_t cout, int64_t t0, int64_t t1) {
  T s[36 * kChannelBlock];
  T r[24 * kChannelBlock];
  T o[16 * kChannelBlock];
  const int64_t plane = (t1 - t0) * cout;
  for (int64_t t = t0; t < t1; ++t) {
    const Tile tile = g.tile(t);
    for (int64_t c0 = 0; c0 < cout; c0 += kChannelBlock) {
      const int64_t nc = std::min(kChannelBlock, cout - c0);
      for (int64_t k = 0; k < 36; ++k) {
        std::copy_n(m + k * plane + (t - t0) * cout + c0, nc, s + k * kChannelBlock);
      }
      for (int64_t j = 0; j < 6; ++j) {  // along rows: 6x6 -> 4x6
        output_1d(s + j * kChannelBlock, r + j * kChannelBlock, 6 * kChannelBlock, nc);
      }
      for (int64_t i = 0; i < 4; ++i) {  // along columns: 4x6 -> 4x4
        output_1d(r + i * 6 * kChannelBlock, o + i * 4 * kChannelBlock, kChannelBlock, nc);
      }
      for (int64_t i = 0; i < 4; ++i) {
        const int64_t y = tile.y0 + i;
        if (y >= g.h) {
          break;
        }
        for (int64_t j = 0; j < 4; ++j) {
          const int64_t xx = tile.x0 + j;
          if (xx >= g.w) {
            break;
          }
          const T* src = o + (i * 4 + j) * kChannelBlock;
          T* dst = out + ((tile.image * g.h + y) * g.w + xx) * cout + c0;
          for (int64_t c = 0; c < nc; ++c) {
            T val = src[c] + (bias ? bias[c0 + c] : T(0));
            dst[c] = relu ? std::max(val, T(0)) : val;
          }
        }
      }
    }
  }
}

// Tiles per chunk: V and M of one chunk (36 components each) take about 4 MiB of float32, so that
// they stay in cache between the transforms and the GEMMs (which keep tens of rows, enough to run
// near full speed), and a small map still gives every thread a few chunks.
int64_t tiles_per_chunk(int64_t tiles, int64_t cin, int64_t cout) {
  const int64_t by_cache = (4 << 20) / (36 * 4 * (cin + cout));
  const int64_t by_balance = (tiles + 4 * at::get_num_threads() - 1) / (4 * at::get_num_threads());
  return std::max<int64_t>(8, std::min(by_cache, by_balance));
}

void check_inputs(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias) {
  TORCH_CHECK(input.dim() == 4, "winograd_conv3x3: input must be [N, C, H, W], got ", input.sizes());
  TORCH_CHECK(
      weight.dim() == 3 && weight.size(0) == 36 && weight.size(1) == input.size(1),
      "winograd_conv3x3: weight_wino must be [36, Cin=", input.size(1), ", Cout], got ", weight.sizes());
  TORCH_CHECK(
      input.scalar_type() == at::kFloat || input.scalar_type() == at::kDouble,
      "winograd_conv3x3: input must be float32 or float64, got ", input.scalar_type());
  TORCH_CHECK(
      weight.scalar_type() == input.scalar_type(), "winograd_conv3x3: weight_wino must be ", input.scalar_type(),
      ", got ", weight.scalar_type());
  if (bias.has_value()) {
    TORCH_CHECK(
        bias->dim() == 1 && bias->size(0) == weight.size(2), "winograd_conv3x3: bias must be [Cout=",
        weight.size(2), "], got ", bias->sizes());
    TORCH_CHECK(
        bias->scalar_type() == input.scalar_type(), "winograd_conv3x3: bias must be ", input.scalar_type());
  }
}

}  // namespace

at::Tensor winograd_conv3x3_cpu(
    const at::Tensor& input,
    const at::Tensor& weight_wino,
    const std::optional<at::Tensor>& bias,
    bool relu) {
  check_inputs(input, weight_wino, bias);
  const at::Tensor x = input.contiguous(at::MemoryFormat::ChannelsLast);
  const at::Tensor u = weight_wino.contiguous();
  const int64_t cin = x.size(1), cout = u.size(2);
  const Geometry g{x.size(0), x.size(2), x.size(3), (x.size(2) + 3) / 4, (x.size(3) + 3) / 4};
  at::Tensor out = at::empty({g.n, cout, g.h, g.w}, x.options().memory_format(at::MemoryFormat::ChannelsLast));
  if (out.numel() == 0) {
    return out;
  }
  at::Tensor b = bias.has_value() ? bias->contiguous() : at::Tensor();
  const int64_t chunk = tiles_per_chunk(g.tiles(), cin, cout);
  const int64_t chunks = (g.tiles() + chunk - 1) / chunk;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "winograd_conv3x3", [&] {
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    const scalar_t* bp = b.defined() ? b.const_data_ptr<scalar_t>() : nullptr;
    scalar_t* op = out.mutable_data_ptr<scalar_t>();
    // Each thread transforms, multiplies and transforms back its own chunks of tiles, so that V and M
    // of a chunk stay in its cache; the GEMM inside a parallel region runs on the calling thread.
    at::parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
      at::Tensor v = at::empty({36, chunk, cin}, x.options());
      at::Tensor m = at::empty({36, chunk, cout}, x.options());
      for (int64_t c = c0; c < c1; ++c) {
        const int64_t t0 = c * chunk, t1 = std::min(g.tiles(), t0 + chunk);
        at::Tensor vc = v.view(-1).narrow(0, 0, 36 * (t1 - t0) * cin).view({36, t1 - t0, cin});
        at::Tensor mc = m.view(-1).narrow(0, 0, 36 * (t1 - t0) * cout).view({36, t1 - t0, cout});
        input_transform(xp, vc.mutable_data_ptr<scalar_t>(), g, cin, t0, t1);
        at::bmm_out(mc, vc, u);
        output_transform(mc.const_data_ptr<scalar_t>(), bp, relu, op, g, cout, t0, t1);
      }
    });
  });
  return out;
}

TORCH_LIBRARY_IMPL(fcos_core, CPU, m) {
  m.impl("winograd_conv3x3", &winograd_conv3x3_cpu);
}

}  // namespace fcos_core
