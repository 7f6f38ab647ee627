// CUDA greedy NMS, single-class and class-aware (see nms.h for the exact semantics).
//
// The bitmask method: boxes are sorted by score (stable, descending); for blocks of 64 boxes a
// kernel sets bit j of mask[i][block(j)] when box j (after i) overlaps box i above the threshold
// (and has the same label, for ml_nms); one thread block then walks the boxes in order, keeping
// those no kept box has marked. IoUs use the operations of the CPU kernel with products rounded
// separately (__fmul_rn / __dmul_rn: no FMA contraction), so both return the same indices.
#include "nms/nms.h"

#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <cstdint>

namespace fcos_core {
namespace {

constexpr int kBlockBoxes = 64;  // boxes per mask word
constexpr int kMaxSharedRemoved = 48 * 1024 / 8;  // mask words the walk keeps in shared memory

__device__ __forceinline__ float mul_rn(float a, float b) {
  return __fmul_rn(a, b);
}

__device__ __forceinline__ double mul_rn(double a, double b) {
  return __dmul_rn(a, b);
}

template <typename T>
__device__ __forceinline__ T box_area(T x1, T y1, T x2, T y2, T offset) {
  return mul_rn(x2 - x1 + offset, y2 - y1 + offset);
}

// mask[i * col_blocks + cb] bit k: sorted box cb*64 + k (> i) overlaps sorted box i above the
// threshold. Blocks below the diagonal have nothing to do. `labels` may be null (single class).
template <typename scalar_t, typename label_t>
__global__ void nms_mask_kernel(
    const scalar_t* __restrict__ boxes,
    const label_t* __restrict__ labels,
    int64_t n,
    int64_t col_blocks,
    at::opmath_type<scalar_t> offset,
    at::opmath_type<scalar_t> threshold,
    uint64_t* __restrict__ mask) {
  using T = at::opmath_type<scalar_t>;
  const int64_t row_block = blockIdx.y;
  const int64_t col_block = blockIdx.x;
  if (row_block > col_block) {
    return;
  }
  const int row_size = static_cast<int>(min(n - row_block * kBlockBoxes, int64_t(kBlockBoxes)));
  const int col_size = static_cast<int>(min(n - col_block * kBlockBoxes, int64_t(kBlockBoxes)));

  __shared__ T cols[kBlockBoxes][5];
  __shared__ label_t col_labels[kBlockBoxes];
  const int tid = static_cast<int>(threadIdx.x);
  if (tid < col_size) {
    const int64_t j = col_block * kBlockBoxes + tid;
    const T x1 = static_cast<T>(boxes[4 * j]);
    const T y1 = static_cast<T>(boxes[4 * j + 1]);
    const T x2 = static_cast<T>(boxes[4 * j + 2]);
    const T y2 = static_cast<T>(boxes[4 * j + 3]);
    cols[tid][0] = x1;
    cols[tid][1] = y1;
    cols[tid][2] = x2;
    cols[tid][3] = y2;
    cols[tid][4] = box_area(x1, y1, x2, y2, offset);
    if (labels != nullptr) {
      col_labels[tid] = labels[j];
    }
  }
  __syncthreads();
  if (tid >= row_size) {
    return;
  }
  const int64_t i = row_block * kBlockBoxes + tid;
  const T ix1 = static_cast<T>(boxes[4 * i]);
  const T iy1 = static_cast<T>(boxes[4 * i + 1]);
  const T ix2 = static_cast<T>(boxes[4 * i + 2]);
  const T iy2 = static_cast<T>(boxes[4 * i + 3]);
  const T iarea = box_area(ix1, iy1, ix2, iy2, offset);
  const label_t ilabel = labels != nullptr ? labels[i] : label_t(0);
  uint64_t bits = 0;
  const int start = row_block == col_block ? tid + 1 : 0;
  for (int k = start; k < col_size; ++k) {
    if (labels != nullptr && !(col_labels[k] == ilabel)) {
      continue;  // different classes never suppress each other (NaN labels equal nothing)
    }
    const T xx1 = ix1 > cols[k][0] ? ix1 : cols[k][0];
    const T yy1 = iy1 > cols[k][1] ? iy1 : cols[k][1];
    const T xx2 = ix2 < cols[k][2] ? ix2 : cols[k][2];
    const T yy2 = iy2 < cols[k][3] ? iy2 : cols[k][3];
    T w = xx2 - xx1 + offset;
    T h = yy2 - yy1 + offset;
    w = w > T(0) ? w : T(0);
    h = h > T(0) ? h : T(0);
    const T inter = mul_rn(w, h);
    const T iou = inter / (iarea + cols[k][4] - inter);
    if (iou > threshold) {
      bits |= uint64_t(1) << k;
    }
  }
  mask[i * col_blocks + col_block] = bits;
}

// The greedy walk over the sorted boxes, in one thread block: `removed` (shared memory, or global
// scratch for very large inputs) holds the OR of the mask rows of the boxes kept so far.
__global__ void nms_walk_kernel(
    const uint64_t* __restrict__ mask,
    int64_t n,
    int64_t col_blocks,
    uint64_t* __restrict__ global_removed,
    bool* __restrict__ keep) {
  extern __shared__ uint64_t shared_removed[];
  uint64_t* removed = global_removed != nullptr ? global_removed : shared_removed;
  for (int64_t j = threadIdx.x; j < col_blocks; j += blockDim.x) {
    removed[j] = 0;
  }
  __syncthreads();
  for (int64_t nblock = 0; nblock < col_blocks; ++nblock) {
    uint64_t removed_here = removed[nblock];
    __syncthreads();
    for (int k = 0; k < kBlockBoxes; ++k) {
      const int64_t i = nblock * kBlockBoxes + k;
      if (i >= n) {
        break;
      }
      if (removed_here & (uint64_t(1) << k)) {
        continue;  // the same decision in every thread: removed_here is block-uniform
      }
      if (threadIdx.x == 0) {
        keep[i] = true;
      }
      const uint64_t* row = mask + i * col_blocks;
      for (int64_t j = nblock + threadIdx.x; j < col_blocks; j += blockDim.x) {
        removed[j] |= row[j];
      }
      __syncthreads();
      removed_here = removed[nblock];
      __syncthreads();
    }
  }
}

template <typename scalar_t, typename label_t>
void launch_mask(
    const at::Tensor& boxes,
    const label_t* labels,
    int64_t n,
    int64_t col_blocks,
    double iou_threshold,
    bool legacy,
    at::Tensor& mask,
    cudaStream_t stream) {
  using T = at::opmath_type<scalar_t>;
  const dim3 grid(static_cast<unsigned>(col_blocks), static_cast<unsigned>(col_blocks));
  nms_mask_kernel<scalar_t, label_t><<<grid, kBlockBoxes, 0, stream>>>(
      boxes.const_data_ptr<scalar_t>(), labels, n, col_blocks, legacy ? T(1) : T(0),
      nms_detail::threshold_below<T>(iou_threshold),
      reinterpret_cast<uint64_t*>(mask.mutable_data_ptr<int64_t>()));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace

at::Tensor nms_cuda_impl(
    const at::Tensor& boxes,
    const at::Tensor& scores,
    const at::Tensor& labels,
    double iou_threshold,
    bool legacy) {
  nms_detail::check_inputs(boxes, scores, labels);
  TORCH_CHECK(boxes.is_cuda(), "nms_cuda: expected CUDA tensors, got ", boxes.device());
  const c10::cuda::CUDAGuard guard(boxes.device());
  const int64_t n = boxes.size(0);
  if (n == 0) {
    return at::empty({0}, boxes.options().dtype(at::kLong));
  }
  const int64_t col_blocks = (n + kBlockBoxes - 1) / kBlockBoxes;
  TORCH_CHECK(col_blocks <= 65535, "nms_cuda: at most ", 65535 * kBlockBoxes, " boxes, got ", n);

  const at::Tensor order = std::get<1>(scores.sort(/*stable=*/true, /*dim=*/0, /*descending=*/true));
  const at::Tensor boxes_sorted = boxes.index_select(0, order).contiguous();
  at::Tensor labels_sorted;
  if (labels.defined()) {  // int64 or float64: both exact for the equality test
    labels_sorted = labels.index_select(0, order).to(labels.is_floating_point() ? at::kDouble : at::kLong).contiguous();
  }
  at::Tensor mask = at::empty({n, col_blocks}, boxes.options().dtype(at::kLong));
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, boxes_sorted.scalar_type(), "nms_cuda", [&] {
    if (!labels_sorted.defined()) {
      launch_mask<scalar_t, int64_t>(boxes_sorted, nullptr, n, col_blocks, iou_threshold, legacy, mask, stream);
    } else if (labels_sorted.scalar_type() == at::kDouble) {
      launch_mask<scalar_t, double>(
          boxes_sorted, labels_sorted.const_data_ptr<double>(), n, col_blocks, iou_threshold, legacy, mask, stream);
    } else {
      launch_mask<scalar_t, int64_t>(
          boxes_sorted, labels_sorted.const_data_ptr<int64_t>(), n, col_blocks, iou_threshold, legacy, mask, stream);
    }
  });

  at::Tensor keep = at::zeros({n}, boxes.options().dtype(at::kBool));
  const bool use_shared = col_blocks <= kMaxSharedRemoved;
  at::Tensor scratch;
  if (!use_shared) {
    scratch = at::empty({col_blocks}, boxes.options().dtype(at::kLong));
  }
  nms_walk_kernel<<<1, 1024, use_shared ? col_blocks * sizeof(uint64_t) : 0, stream>>>(
      reinterpret_cast<const uint64_t*>(mask.const_data_ptr<int64_t>()), n, col_blocks,
      use_shared ? nullptr : reinterpret_cast<uint64_t*>(scratch.mutable_data_ptr<int64_t>()),
      keep.mutable_data_ptr<bool>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return order.masked_select(keep);
}

at::Tensor nms_cuda(const at::Tensor& boxes, const at::Tensor& scores, double iou_threshold, bool legacy) {
  return nms_cuda_impl(boxes, scores, at::Tensor(), iou_threshold, legacy);
}

TORCH_LIBRARY_IMPL(fcos_core, CUDA, m) {
  m.impl("nms", &nms_cuda);
}

}  // namespace fcos_core
