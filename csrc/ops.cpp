// Operator schemas of fcos_core._C. Each op's kernels live in csrc/<op>/ and are
// registered per device with TORCH_LIBRARY_IMPL(fcos_core, CPU|CUDA, m).
#include <Python.h>
#include <torch/library.h>

TORCH_LIBRARY(fcos_core, m) {
  // Greedy NMS over boxes [N, 4] (x1, y1, x2, y2) with scores [N]. Returns the kept
  // indices (int64) in decreasing score order; equal scores keep the lower index first.
  // legacy=true measures widths as x2 - x1 + 1 like the original FCOS kernels;
  // legacy=false is the continuous convention of torchvision.ops.nms.
  m.def("nms(Tensor boxes, Tensor scores, float iou_threshold, bool legacy=True) -> Tensor");
  // Class-aware NMS in one call: boxes of different labels never suppress each other.
  m.def(
      "ml_nms(Tensor boxes, Tensor scores, Tensor labels, float iou_threshold, bool legacy=True) -> Tensor");
  // Sigmoid focal loss (Lin et al. 2017) of logits [N, C] against labels [N] in 0..C
  // (0 = background, c = column c-1 positive, negative labels ignored), summed to a
  // 0-dim tensor without keeping an [N, C] intermediate.
  m.def("sigmoid_focal_loss_forward(Tensor logits, Tensor labels, float gamma, float alpha) -> Tensor");
  // d(sum loss)/d(logits) * grad_output (a 0-dim tensor): [N, C].
  m.def(
      "sigmoid_focal_loss_backward(Tensor logits, Tensor labels, Tensor grad_output, float gamma, float alpha) -> Tensor");
  // 3x3, stride 1, padding 1 convolution of input [N, Cin, H, W] by Winograd F(4x4, 3x3), with the
  // filters already transformed (weight_wino [36, Cin, Cout], fcos_core/layers/winograd.py), the bias
  // [Cout] added and an optional ReLU. Returns [N, Cout, H, W] in channels_last. Inference only.
  m.def("winograd_conv3x3(Tensor input, Tensor weight_wino, Tensor? bias, bool relu=False) -> Tensor");
}

// A Python module so that `import fcos_core._C` loads the library and runs the
// registrations above; the ops themselves are reached through torch.ops.fcos_core.
static struct PyModuleDef fcos_core_c_module = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};

PyMODINIT_FUNC PyInit__C(void) {
  return PyModule_Create(&fcos_core_c_module);
}
