"""Default configuration of FCOS (Tian et al., ICCV 2019, arXiv:1904.01355).

Key names and default values are those of the original implementation
(tianzhi0549/FCOS, built on maskrcnn-benchmark), so its yaml files and
command lines work unchanged. Keys added by this reimplementation are marked
"(new)"; their defaults reproduce the original behaviour.

Section numbers (§) refer to the ICCV paper. The "imprv" options
(CENTER_SAMPLING_RADIUS, IOU_LOSS_TYPE "giou", NORM_REG_TARGETS,
CENTERNESS_ON_REG) are the improvements listed in the FCOS README and the
later arXiv versions of the paper; they are off by default and switched on by
configs/fcos/fcos_imprv_*.yaml.

Naming convention (from maskrcnn-benchmark): a setting that differs between
training and testing ends in _TRAIN or _TEST.

Library code never imports this module's ``_C``: a ``make_*``/``build_*``
function reads the config and passes explicit arguments to constructors.
"""

import os

from .config import CfgNode as CN

_C = CN()

# ---------------------------------------------------------------------------- #
# Model: which heads run and where
# ---------------------------------------------------------------------------- #
_C.MODEL = CN()
# "cpu", "cuda" or "cuda:N". Scripts pass it through
# fcos_core.config.resolve_device, which falls back to the CPU without CUDA.
_C.MODEL.DEVICE = "cuda"
# Meta-architecture: backbone + FPN + dense head, as in maskrcnn-benchmark.
_C.MODEL.META_ARCHITECTURE = "GeneralizedRCNN"
# The dense head's detections are the final output (no RoI stage). The FCOS
# configs set it to True.
_C.MODEL.RPN_ONLY = False
# Use the FCOS head as the dense head.
_C.MODEL.FCOS_ON = True
# Heads inherited from maskrcnn-benchmark, not part of FCOS; kept so that
# configs written for the original still merge. They must stay False.
_C.MODEL.RETINANET_ON = False
_C.MODEL.MASK_ON = False
_C.MODEL.KEYPOINT_ON = False
# Initial weights: a path, a URL, or "catalog://<name>" resolved through
# PATHS_CATALOG (e.g. "catalog://ImageNetPretrained/MSRA/R-50"). Training
# loads its weights only (fine-tuning: no optimizer, schedule or iteration; a
# classifier of another class count keeps its PRIOR_PROB initialisation), and
# ignores it when OUTPUT_DIR has a last_checkpoint (a resume): docs/usage.md.
_C.MODEL.WEIGHT = ""
# Convert BatchNorm layers to SyncBatchNorm for multi-GPU training (used by
# the MobileNetV2 configs, whose backbone has trainable BatchNorm).
_C.MODEL.USE_SYNCBN = False

# ---------------------------------------------------------------------------- #
# Backbone
# ---------------------------------------------------------------------------- #
_C.MODEL.BACKBONE = CN()
# Registered backbone name. FCOS uses the P3-P7 ("RETINANET") variants:
# "R-50-FPN-RETINANET", "R-101-FPN-RETINANET" (also ResNeXt-101 through
# MODEL.RESNETS.NUM_GROUPS / WIDTH_PER_GROUP) and "MNV2-FPN-RETINANET".
# The original also registered "R-50-C4", "R-50-C5", "R-101-C4", "R-101-C5",
# "R-50-FPN", "R-101-FPN" and "R-152-FPN".
_C.MODEL.BACKBONE.CONV_BODY = "R-50-C4"
# Freeze the stem and the first (N - 1) residual stages: 2 = stem and res2
# frozen (ResNet). For MobileNetV2 it is the number of leading feature blocks
# frozen; its configs use 0.
_C.MODEL.BACKBONE.FREEZE_CONV_BODY_AT = 2
# GroupNorm instead of frozen BatchNorm in the backbone.
_C.MODEL.BACKBONE.USE_GN = False

# ---------------------------------------------------------------------------- #
# FPN (§3.2)
# ---------------------------------------------------------------------------- #
_C.MODEL.FPN = CN()
# GroupNorm after the FPN lateral and output convolutions.
_C.MODEL.FPN.USE_GN = False
# ReLU after the FPN lateral and output convolutions.
_C.MODEL.FPN.USE_RELU = False

# ---------------------------------------------------------------------------- #
# GroupNorm (used by the FCOS head towers and by USE_GN options)
# ---------------------------------------------------------------------------- #
_C.MODEL.GROUP_NORM = CN()
# Channels per group; -1 to use NUM_GROUPS instead (exactly one must be -1).
_C.MODEL.GROUP_NORM.DIM_PER_GP = -1
# Number of groups; -1 to use DIM_PER_GP instead.
_C.MODEL.GROUP_NORM.NUM_GROUPS = 32
# Added to the variance for numerical stability.
_C.MODEL.GROUP_NORM.EPSILON = 1e-5

# ---------------------------------------------------------------------------- #
# ResNet / ResNeXt
# ---------------------------------------------------------------------------- #
_C.MODEL.RESNETS = CN()
# 1 = ResNet; > 1 = ResNeXt cardinality (32 for X-101-32x8d, 64 for 64x4d).
_C.MODEL.RESNETS.NUM_GROUPS = 1
# Width of each group in the first stage (8 for X-101-32x8d, 4 for 64x4d).
_C.MODEL.RESNETS.WIDTH_PER_GROUP = 64
# Stride 2 on the 1x1 conv of a bottleneck (MSRA weights) instead of the 3x3
# (FAIR/Torch weights, e.g. the ResNeXt ImageNet models: set False).
_C.MODEL.RESNETS.STRIDE_IN_1X1 = True
# Bottleneck block and stem, by registered name; the name chooses the norm layer:
# *WithFixedBatchNorm (the default: FrozenBatchNorm, statistics and affine terms never change),
# *WithGN (GroupNorm), and new here *WithBatchNorm (trainable BatchNorm, for training from
# scratch, as the quickstart does).
_C.MODEL.RESNETS.TRANS_FUNC = "BottleneckWithFixedBatchNorm"
_C.MODEL.RESNETS.STEM_FUNC = "StemWithFixedBatchNorm"
# Dilation of the res5 stage (1 = none).
_C.MODEL.RESNETS.RES5_DILATION = 1
# Output channels of the backbone. The FCOS configs set 256: in the original
# this key also sets the FPN channels and the head tower width ("c128"
# MobileNet configs use 128).
_C.MODEL.RESNETS.BACKBONE_OUT_CHANNELS = 256 * 4
# Channels out of res2 (they double at each following stage) and the stem.
_C.MODEL.RESNETS.RES2_OUT_CHANNELS = 256
_C.MODEL.RESNETS.STEM_OUT_CHANNELS = 64
# Deformable convolution (DCNv2 with WITH_MODULATED_DCN) in the 3x3 convs of
# the stages res2..res5, one flag per stage; e.g. (False, True, True, True)
# puts it in res3..res5 as in the "dcnv2" configs.
_C.MODEL.RESNETS.STAGE_WITH_DCN = (False, False, False, False)
_C.MODEL.RESNETS.WITH_MODULATED_DCN = False
_C.MODEL.RESNETS.DEFORMABLE_GROUPS = 1
# (new) Epsilon of the backbone's FrozenBatchNorm2d: scale = weight / sqrt(running_var + eps).
# 0.0 is the original's (no epsilon); torchvision's frozen norms use 1e-5
# (configs/torchvision/fcos_resnet50_fpn_coco.yaml).
_C.MODEL.RESNETS.FROZEN_BN_EPS = 0.0

# ---------------------------------------------------------------------------- #
# RetinaNet options. FCOS reads only USE_C5; the rest are the original's
# RetinaNet defaults, kept so that configs of the original merge.
# ---------------------------------------------------------------------------- #
_C.MODEL.RETINANET = CN()
# Input of the P6 conv: C5 (True, RetinaNet) or P5 (False, FCOS §3.2: every
# FCOS config sets False). The MNV2 backbone always uses P5.
_C.MODEL.RETINANET.USE_C5 = True
# Classes including background.
_C.MODEL.RETINANET.NUM_CLASSES = 81
# Anchors.
_C.MODEL.RETINANET.ANCHOR_SIZES = (32, 64, 128, 256, 512)
_C.MODEL.RETINANET.ASPECT_RATIOS = (0.5, 1.0, 2.0)
_C.MODEL.RETINANET.ANCHOR_STRIDES = (8, 16, 32, 64, 128)
_C.MODEL.RETINANET.STRADDLE_THRESH = 0
_C.MODEL.RETINANET.OCTAVE = 2.0
_C.MODEL.RETINANET.SCALES_PER_OCTAVE = 3
# Head.
_C.MODEL.RETINANET.NUM_CONVS = 4
_C.MODEL.RETINANET.PRIOR_PROB = 0.01
# Losses and matching.
_C.MODEL.RETINANET.BBOX_REG_WEIGHT = 4.0
_C.MODEL.RETINANET.BBOX_REG_BETA = 0.11
_C.MODEL.RETINANET.FG_IOU_THRESHOLD = 0.5
_C.MODEL.RETINANET.BG_IOU_THRESHOLD = 0.4
_C.MODEL.RETINANET.LOSS_ALPHA = 0.25
_C.MODEL.RETINANET.LOSS_GAMMA = 2.0
# Inference.
_C.MODEL.RETINANET.PRE_NMS_TOP_N = 1000
_C.MODEL.RETINANET.INFERENCE_TH = 0.05
_C.MODEL.RETINANET.NMS_TH = 0.4

# ---------------------------------------------------------------------------- #
# FCOS head, targets, losses and post-processing
# ---------------------------------------------------------------------------- #
_C.MODEL.FCOS = CN()
# Classes including background: 81 for COCO, so the head predicts 80 logits
# and labels run 1..80. Checked against DATASETS.TRAIN before training (too
# few is an error). 0: take it from the data (training: DATASETS.TRAIN's
# categories, recorded in OUTPUT_DIR/config.yml; test, demo, export: the
# checkpoint's classifier).
_C.MODEL.FCOS.NUM_CLASSES = 81
# Strides of P3..P7 (§3.2). Location (i, j) of a level with stride s sits at
# (j*s + s//2, i*s + s//2) in the input image.
_C.MODEL.FCOS.FPN_STRIDES = [8, 16, 32, 64, 128]
# Prior foreground probability: the classification bias starts at
# -log((1 - p) / p) so that early training is not swamped by negatives (as
# in RetinaNet).
_C.MODEL.FCOS.PRIOR_PROB = 0.01
# Inference (§3.1): candidates need a classification score > INFERENCE_TH;
# at most PRE_NMS_TOP_N candidates per level and image go to NMS, which uses
# IoU threshold NMS_TH. TEST.DETECTIONS_PER_IMG caps the result.
_C.MODEL.FCOS.INFERENCE_TH = 0.05
_C.MODEL.FCOS.NMS_TH = 0.6
_C.MODEL.FCOS.PRE_NMS_TOP_N = 1000
# Focal loss for classification (§3.1, eq. 2).
_C.MODEL.FCOS.LOSS_ALPHA = 0.25
_C.MODEL.FCOS.LOSS_GAMMA = 2.0
# Conv3x3 + GroupNorm + ReLU layers in each of the classification and
# regression towers (§3.2, Fig. 2).
_C.MODEL.FCOS.NUM_CONVS = 4
# Sec. 3.2 (multi-level prediction): the boundaries m_1..m_4 (pixels) between the
# levels' ranges of max(l, t, r, b); P3 takes [0, m_1], ..., P7 (m_4, inf). The
# paper's values for 800-pixel COCO images; smaller images may scale them down.
# (The name is AdelaiDet's key for the same thing.)
_C.MODEL.FCOS.SIZES_OF_INTEREST = [64, 128, 256, 512]
# imprv: center sampling. A location is positive only within a square of
# half-size RADIUS * stride around the box centre (clipped to the box).
# <= 0 disables it (the paper's rule: anywhere inside the box).
_C.MODEL.FCOS.CENTER_SAMPLING_RADIUS = 0.0
# (new) In training, keep only each head-tower GroupNorm's input for the backward
# pass and recompute GroupNorm + ReLU there (fcos_core/layers/norm_relu_conv.py):
# half the towers' saved activations for one more GroupNorm + ReLU forward per
# layer; same results. Towers with a deformable conv (USE_DCN_IN_TOWER) run plainly.
_C.MODEL.FCOS.RECOMPUTE_TOWER_NORM = True
# Box regression loss (§3.1): "iou" (-log IoU, UnitBox), "linear_iou"
# (1 - IoU) or "giou" (imprv).
_C.MODEL.FCOS.IOU_LOSS_TYPE = "iou"
# imprv: regress l, t, r, b divided by the level's stride, with a ReLU instead
# of exp() on the head output (multiplied back by the stride at test time).
_C.MODEL.FCOS.NORM_REG_TARGETS = False
# imprv: compute center-ness (§3.3) from the regression tower instead of the
# classification tower.
_C.MODEL.FCOS.CENTERNESS_ON_REG = False
# Deformable conv (DCNv2) as the last conv of each tower ("dcnv2" configs).
_C.MODEL.FCOS.USE_DCN_IN_TOWER = False
# (new) Locations and post-processing: "original" (this codebase and the released
# FCOS models: location (j*s + s//2, i*s + s//2); candidates by classification
# probability > INFERENCE_TH, ranked by probability x centerness; boxes clipped to
# W-1/H-1; NMS with the legacy +1 IoU; ties at the TEST.DETECTIONS_PER_IMG cut kept) or
# "torchvision" (torchvision's FCOS: location (j * (W_pad // W_l), i * (H_pad // H_l)),
# no half-stride offset, strides from the padded batch size; candidates by
# sqrt(prob x centerness) > INFERENCE_TH; boxes clipped to W/H; continuous IoU; exactly
# DETECTIONS_PER_IMG kept). See docs/torchvision_fcos.md.
_C.MODEL.FCOS.CONVENTION = "original"

# ---------------------------------------------------------------------------- #
# Input: resizing, normalisation and training augmentation
# ---------------------------------------------------------------------------- #
_C.INPUT = CN()
# Short side during training; with several values one is drawn per image.
_C.INPUT.MIN_SIZE_TRAIN = (800,)
# Multi-scale training: (low, high) short side drawn uniformly per image
# (the 2x configs use (640, 800)). (-1, -1) disables it and uses
# MIN_SIZE_TRAIN.
_C.INPUT.MIN_SIZE_RANGE_TRAIN = (-1, -1)
# Cap on the long side during training (the short side shrinks to fit).
_C.INPUT.MAX_SIZE_TRAIN = 1333
# Short side and long-side cap at test time.
_C.INPUT.MIN_SIZE_TEST = 800
_C.INPUT.MAX_SIZE_TEST = 1333
# Per-channel mean and std subtracted/divided after TO_BGR255, in BGR order
# and 0-255 units (the Caffe2 ImageNet statistics of the MSRA weights).
_C.INPUT.PIXEL_MEAN = [102.9801, 115.9465, 122.7717]
_C.INPUT.PIXEL_STD = [1.0, 1.0, 1.0]
# Feed BGR in 0-255 (True, Caffe2-style weights) instead of RGB in 0-1.
_C.INPUT.TO_BGR255 = True
# (new) How images are resized: "original" (resize the PIL image to integer sizes
# rounded as the original, then ToTensor and Normalize) or "torchvision" (as
# torchvision's GeneralizedRCNNTransform: ToTensor, Normalize, then bilinear
# interpolation of the tensor by scale = min(MIN_SIZE / short side, MAX_SIZE / long
# side), sizes floor(side * scale)). See docs/torchvision_fcos.md.
_C.INPUT.RESIZE_STYLE = "original"
# (new) What resizes the image with RESIZE_STYLE "original" (the sizes are the same):
# "pil" (PIL's bilinear resize of the decoded image, as the original) or "tensor" (the
# uint8 image as a tensor, torch's bilinear interpolation with antialiasing: within 2
# grey levels of PIL's, about 2x faster; docs/benchmark.md "Loader throughput"). "tensor"
# needs the PIL-based degradations off (PHOTOMETRIC/BLUR/NOISE/JPEG_PROB_TRAIN 0).
_C.INPUT.RESIZE_BACKEND = "pil"
# Colour jitter strengths as in maskrcnn-benchmark (torchvision ColorJitter);
# 0 disables each. The original FCOS has none.
_C.INPUT.BRIGHTNESS = 0.0
_C.INPUT.CONTRAST = 0.0
_C.INPUT.SATURATION = 0.0
_C.INPUT.HUE = 0.0
# Probability of a horizontal flip during training (maskrcnn-benchmark's key;
# the original FCOS hard-codes 0.5).
_C.INPUT.HORIZONTAL_FLIP_PROB_TRAIN = 0.5
# Training augmentations beyond the original's flips and multi-scale resizing,
# all off by default (docs/augmentation.md). Order: crop, resize (with scale
# jitter), flip, photometric distortion, blur, noise, JPEG. Probabilities are
# per image; ranges are (low, high), drawn uniformly.
# Random crop before resizing, as detectron2 does: probability, and the crop's
# (height, width) as fractions of the image's, each drawn in [value, 1]
# (detectron2's RandomCrop "relative_range"; (0.9, 0.9) is its INPUT.CROP.SIZE
# default). Boxes whose centre leaves the crop are dropped, the others clipped.
_C.INPUT.CROP_PROB_TRAIN = 0.0
_C.INPUT.CROP_SIZE_TRAIN = (0.9, 0.9)
# Scale jitter: a factor drawn in this range multiplies the short side chosen
# by MIN_SIZE_TRAIN / MIN_SIZE_RANGE_TRAIN and MAX_SIZE_TRAIN (the ratio_range
# of mmdetection's Resize); (1.0, 1.0) is off. (0.8, 1.25) is log-symmetric.
_C.INPUT.SCALE_JITTER_TRAIN = (1.0, 1.0)
# mmdetection's PhotoMetricDistortion (its defaults): probability per image,
# then brightness, contrast, saturation, hue each with probability 0.5.
_C.INPUT.PHOTOMETRIC_PROB_TRAIN = 0.0
_C.INPUT.PHOTOMETRIC_BRIGHTNESS_DELTA = 32.0  # added, in 0-255 units
_C.INPUT.PHOTOMETRIC_CONTRAST_RANGE = (0.5, 1.5)  # gain
_C.INPUT.PHOTOMETRIC_SATURATION_RANGE = (0.5, 1.5)  # HSV saturation gain
_C.INPUT.PHOTOMETRIC_HUE_DELTA = 18.0  # degrees of hue, added
# Gaussian blur: sigma in pixels (torchvision GaussianBlur's default range).
_C.INPUT.BLUR_PROB_TRAIN = 0.0
_C.INPUT.BLUR_SIGMA_TRAIN = (0.1, 2.0)
# Gaussian sensor noise: std in 0-255 units (albumentations GaussNoise's
# default var_limit (10, 50) as standard deviations).
_C.INPUT.NOISE_PROB_TRAIN = 0.0
_C.INPUT.NOISE_STD_TRAIN = (3.2, 7.1)
# JPEG re-compression: quality, integers in [1, 100] (Real-ESRGAN's jpeg_range).
_C.INPUT.JPEG_PROB_TRAIN = 0.0
_C.INPUT.JPEG_QUALITY_TRAIN = (30, 95)

# ---------------------------------------------------------------------------- #
# Datasets: names looked up in PATHS_CATALOG
# ---------------------------------------------------------------------------- #
_C.DATASETS = CN()
# Datasets concatenated for training, e.g. ("coco_2014_train",
# "coco_2014_valminusminival").
_C.DATASETS.TRAIN = ()
# Datasets evaluated one after the other, e.g. ("coco_2014_minival",).
_C.DATASETS.TEST = ()

# ---------------------------------------------------------------------------- #
# Data loader
# ---------------------------------------------------------------------------- #
_C.DATALOADER = CN()
# Worker processes per data loader.
_C.DATALOADER.NUM_WORKERS = 4
# Pad each batch so that height and width are multiples of this (0 = no
# rounding). The FCOS configs use 32, the stride of P5.
_C.DATALOADER.SIZE_DIVISIBILITY = 0
# Batch landscape images with landscape ones and portrait with portrait,
# which wastes less padding.
_C.DATALOADER.ASPECT_RATIO_GROUPING = True

# ---------------------------------------------------------------------------- #
# Solver (§4: SGD, 90k iterations, lr 0.01, batch 16, lr x0.1 at 60k and 80k,
# weight decay 1e-4, momentum 0.9; these values live in the configs)
# ---------------------------------------------------------------------------- #
_C.SOLVER = CN()
# (new) "SGD" (the original, with MOMENTUM) or "AdamW".
_C.SOLVER.OPTIMIZER = "SGD"
# (new) "WarmupMultiStepLR" (the original: x GAMMA at each of STEPS) or
# "WarmupCosineLR" (cosine decay over MAX_ITER; STEPS and GAMMA unused).
# Both use the warm-up below.
_C.SOLVER.LR_SCHEDULER = "WarmupMultiStepLR"
_C.SOLVER.MAX_ITER = 40000
_C.SOLVER.BASE_LR = 0.001
# Biases get BASE_LR * BIAS_LR_FACTOR and WEIGHT_DECAY_BIAS.
_C.SOLVER.BIAS_LR_FACTOR = 2.0
# Learning-rate factor for the offset convs of deformable convolutions.
_C.SOLVER.DCONV_OFFSETS_LR_FACTOR = 1.0
_C.SOLVER.MOMENTUM = 0.9
_C.SOLVER.WEIGHT_DECAY = 0.0005
_C.SOLVER.WEIGHT_DECAY_BIAS = 0.0
# Multi-step schedule: multiply the lr by GAMMA at each iteration in STEPS.
_C.SOLVER.GAMMA = 0.1
_C.SOLVER.STEPS = (30000,)
# Warm-up over the first WARMUP_ITERS iterations, starting at
# BASE_LR * WARMUP_FACTOR: "constant" (the FCOS configs) or "linear".
_C.SOLVER.WARMUP_FACTOR = 1.0 / 3
_C.SOLVER.WARMUP_ITERS = 500
_C.SOLVER.WARMUP_METHOD = "linear"
# Save a checkpoint every this many iterations.
_C.SOLVER.CHECKPOINT_PERIOD = 2500
# (new) Keep only the last this many periodic checkpoints (model_XXXXXXX.pth); older
# ones are deleted once the new one is written and last_checkpoint names it.
# model_final, model_best and model_last_good are never deleted. 0 keeps all.
_C.SOLVER.CHECKPOINT_KEEP = 0
# (new) Log (and append to OUTPUT_DIR/metrics.json) every this many iterations.
_C.SOLVER.LOG_PERIOD = 20
# (maskrcnn-benchmark's later key) Evaluate DATASETS.TEST every this many
# iterations and at MAX_ITER (0: only the test after training). AP goes to
# metrics.json, loss_curves.png and TensorBoard; OUTPUT_DIR/model_best.pth keeps
# the weights of the best bbox AP on the first test dataset. The evaluation at
# MAX_ITER is then the final test (tools/train_net.py does not test again).
_C.SOLVER.TEST_PERIOD = 0
# Images per training batch over all processes (16 = 8 GPUs x 2 images).
_C.SOLVER.IMS_PER_BATCH = 16
# (new) Clip the global gradient L2 norm to this value; 0 disables clipping.
_C.SOLVER.CLIP_GRAD_NORM = 0.0
# (new) Mixed-precision training with autocast: float16 on CUDA, bfloat16
# on CPU.
_C.SOLVER.AMP = False
# (new) Keep images and conv weights in channels_last memory format, in
# training and at test time. On by default: oneDNN's CPU convolutions run faster
# in it (measured on a 2-core AVX-512 CPU, fp32, 800x1333: inference 2.98 -> 2.23 s
# with tools/profile_inference.py, a batch-2 training step 17.5 -> 16.2 s; see
# docs/benchmark.md), and it is the layout cuDNN's tensor-core kernels prefer
# (not measured on a GPU yet).
_C.SOLVER.CHANNELS_LAST = True

# ---------------------------------------------------------------------------- #
# Testing
# ---------------------------------------------------------------------------- #
_C.TEST = CN()
# Regression checks of tools/test_net.py: [[dataset, iou_type, metric, value,
# std], ...]; a result further than EXPECTED_RESULTS_SIGMA_TOL stds fails.
_C.TEST.EXPECTED_RESULTS = []
_C.TEST.EXPECTED_RESULTS_SIGMA_TOL = 4
# Images per test batch over all processes.
_C.TEST.IMS_PER_BATCH = 8
# Detections kept per image after NMS (the COCO limit).
_C.TEST.DETECTIONS_PER_IMG = 100
# (new) Run inference under autocast (float16 on CUDA, bfloat16 on CPU); boxes
# and scores are decoded, NMS'd and returned in float32.
_C.TEST.AMP = False
# (new) The autocast dtype of TEST.AMP: "" lets the device choose (float16 on
# CUDA; bfloat16 on CPUs with AVX-512 BF16 or AMX, float32 with a warning on
# other CPUs, where bfloat16 is emulated and slower); "float16" or "bfloat16"
# force it (a warning where it is emulated). bfloat16 on a CPU also runs the
# model in channels_last (what oneDNN's bfloat16 convolutions want).
_C.TEST.AMP_DTYPE = ""
# (new) Fold every conv + FrozenBatchNorm2d (or eval BatchNorm2d) pair of the
# backbone into one conv with a bias for inference (fcos_core/modeling/fuse.py).
# Same detections up to float rounding; the model that is trained and saved
# keeps its layers and checkpoint keys (the folded one is a copy).
_C.TEST.FUSE_FROZEN_BN = True
# (new) Run the backbone (body + FPN) and the FCOS head through torch.compile
# (inductor, frozen weights: on a CPU prepacked oneDNN convolutions with the
# bias, ReLU and residual add fused in; fcos_core/engine/compile.py); the
# locations and post-processing (top-k, NMS) stay eager. The first call per
# shape family (dynamic sizes; with / without autocast, batch size) compiles
# for tens of seconds. Works with TEST.AMP (bfloat16 autocast on a CPU).
# PyTorch backend only (TEST.BACKEND "pytorch"); needs a C++ compiler (g++).
# Evaluations during training (SOLVER.TEST_PERIOD) run eagerly.
_C.TEST.COMPILE = False
# (new) Run every 3x3 stride-1 convolution (ResNet's conv2, FPN outputs, the
# FCOS head) by Winograd's F(4x4, 3x3) (Lavin & Gray 2016; csrc/winograd,
# fcos_core/layers/winograd.py): 2.25x fewer multiplications, float32 results
# within a few 1e-5 relative of the direct convolution. CPU and float32 only
# (not with TEST.AMP), PyTorch backend; combines with TEST.COMPILE. Turns
# channels_last on.
_C.TEST.WINOGRAD = False
# (new) Which COCOeval computes the COCO AP: "auto" (faster-coco-eval when it
# is installed, else pycocotools), "pycocotools" (the reference) or
# "faster_coco_eval" (the same numbers, faster; pip install
# "fcos_core[eval]"). The log and coco_results.json name the one used.
_C.TEST.COCO_EVAL_BACKEND = "auto"
# (new) What runs the detector in tools/test_net.py, COCODemo, the demos and the
# fcos command: "pytorch", or the model's ONNX export (post-processing included,
# fcos_core/export/onnx.py) under "onnxruntime" (pip install "fcos_core[export]")
# or "openvino" (pip install "fcos_core[openvino]"), on the CPU in float32, with
# the same pre-processing and output (fcos_core/export/runtime.py). The export is
# made on first use and cached (TEST.ONNX_CACHE_DIR). Evaluations during
# training always run the PyTorch model.
_C.TEST.BACKEND = "pytorch"
# (new) Folder of the TEST.BACKEND exports, keyed by config, weights and opset;
# "" is $TORCH_HOME/fcos_onnx_cache (~/.cache/torch/fcos_onnx_cache).
_C.TEST.ONNX_CACHE_DIR = ""
# (new) Precision of the TEST.BACKEND graph: "fp32", or "int8": the export with
# its convolutions quantized by tools/quantize_onnx.py (static, calibrated on
# DATASETS.TRAIN; fcos_core/export/quantize.py), written beside the cached export;
# or "bf16" (TEST.BACKEND "openvino" only): the fp32 export run with OpenVINO's
# bf16 INFERENCE_PRECISION_HINT, on CPUs with AVX-512 BF16 or AMX (an error elsewhere).
_C.TEST.ONNX_PRECISION = "fp32"

# Test-time augmentation: detections at several scales and/or flipped are
# pooled and go through the same class-wise NMS and top-k as one image.
_C.TEST.BBOX_AUG = CN()
_C.TEST.BBOX_AUG.ENABLED = False
# Also detect on the horizontally flipped image at the test scale.
_C.TEST.BBOX_AUG.H_FLIP = False
# Extra short-side sizes to detect at, with long side at most MAX_SIZE.
_C.TEST.BBOX_AUG.SCALES = ()
_C.TEST.BBOX_AUG.MAX_SIZE = 4000
# Also detect on the flipped image at each of SCALES.
_C.TEST.BBOX_AUG.SCALE_H_FLIP = False

# ---------------------------------------------------------------------------- #
# Miscellaneous
# ---------------------------------------------------------------------------- #
# Checkpoints, logs and evaluation results go here.
_C.OUTPUT_DIR = "."
# (new) Seed of the model initialisation (SEED + rank in each process) and of
# the training data: the images of each iteration and their random
# augmentation depend on (SEED, iteration) only, so a resumed run sees the
# same data as an uninterrupted one.
_C.SEED = 1234
# Python file that maps dataset names and "catalog://" weights to paths/URLs.
_C.PATHS_CATALOG = os.path.join(os.path.dirname(__file__), "paths_catalog.py")
