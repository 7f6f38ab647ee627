"""Optimizer and schedule from the config (SOLVER.*): the one place that reads it."""
import torch

from .lr_scheduler import WarmupCosineLR, WarmupMultiStepLR


def param_groups(model, base_lr, weight_decay, bias_lr_factor=1.0, weight_decay_bias=0.0,
                 dconv_offsets_lr_factor=1.0):
    """Trainable parameters grouped by (learning rate, weight decay).

    Biases get ``base_lr * bias_lr_factor`` and ``weight_decay_bias``; deformable-conv offset
    predictors (``*.offset.weight|bias``) get their rate times ``dconv_offsets_lr_factor``, as
    the original. Parameters with the same settings share a group, which lets the optimizer
    update them in one fused step instead of one group per tensor.
    """
    groups = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        lr, wd = base_lr, weight_decay
        if "bias" in name:
            lr, wd = base_lr * bias_lr_factor, weight_decay_bias
        if name.endswith(".offset.weight") or name.endswith(".offset.bias"):
            lr *= dconv_offsets_lr_factor
        groups.setdefault((lr, wd), []).append(param)
    return [{"params": params, "lr": lr, "weight_decay": wd} for (lr, wd), params in groups.items()]


def _fused_supported(groups):
    """Whether torch's fused (one kernel for all parameters) SGD/AdamW applies: every parameter a
    floating-point tensor on the CPU or CUDA, all on one device type. The fused step does the same
    arithmetic as the per-parameter loop; on the CPU it is several times faster (fewer, larger
    parallel regions), which matters for small models. None lets torch choose (no fusing)."""
    params = [p for g in groups for p in g["params"]]
    kinds = {p.device.type for p in params}
    if not params or len(kinds) != 1 or kinds.pop() not in ("cpu", "cuda"):
        return None
    return True if all(torch.is_floating_point(p) for p in params) else None


def make_optimizer(cfg, model):
    """SGD with momentum (the original) or AdamW (SOLVER.OPTIMIZER)."""
    s = cfg.SOLVER
    groups = param_groups(model, s.BASE_LR, s.WEIGHT_DECAY, s.BIAS_LR_FACTOR, s.WEIGHT_DECAY_BIAS,
                          s.DCONV_OFFSETS_LR_FACTOR)
    fused = _fused_supported(groups)
    if s.OPTIMIZER == "SGD":
        return torch.optim.SGD(groups, lr=s.BASE_LR, momentum=s.MOMENTUM, fused=fused)
    if s.OPTIMIZER == "AdamW":
        return torch.optim.AdamW(groups, lr=s.BASE_LR, fused=fused)
    raise ValueError(f"SOLVER.OPTIMIZER must be 'SGD' or 'AdamW', got {s.OPTIMIZER!r}")


def make_lr_scheduler(cfg, optimizer):
    """WarmupMultiStepLR (the original) or WarmupCosineLR (SOLVER.LR_SCHEDULER)."""
    s = cfg.SOLVER
    if s.LR_SCHEDULER == "WarmupMultiStepLR":
        return WarmupMultiStepLR(optimizer, s.STEPS, s.GAMMA, warmup_factor=s.WARMUP_FACTOR,
                                 warmup_iters=s.WARMUP_ITERS, warmup_method=s.WARMUP_METHOD)
    if s.LR_SCHEDULER == "WarmupCosineLR":
        return WarmupCosineLR(optimizer, s.MAX_ITER, warmup_factor=s.WARMUP_FACTOR,
                              warmup_iters=s.WARMUP_ITERS, warmup_method=s.WARMUP_METHOD)
    raise ValueError(
        f"SOLVER.LR_SCHEDULER must be 'WarmupMultiStepLR' or 'WarmupCosineLR', got {s.LR_SCHEDULER!r}"
    )
