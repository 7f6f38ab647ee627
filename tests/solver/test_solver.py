"""Optimizer groups and learning-rate schedules."""
import math

import pytest
import torch
from torch import nn

from fcos_core.config import cfg as default_cfg
from fcos_core.solver import WarmupCosineLR, WarmupMultiStepLR, make_lr_scheduler, make_optimizer


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 3)
        self.dcn = nn.Module()
        self.dcn.offset = nn.Conv2d(2, 2, 1)
        self.frozen = nn.Linear(2, 2)
        self.frozen.weight.requires_grad_(False)


def _lrs(sched, n):
    out = []
    for _ in range(n):
        out.append(sched.get_last_lr()[0])
        sched.optimizer.step()
        sched.step()
    return out


def test_param_groups_follow_bias_and_offset_rules():
    cfg = default_cfg.clone()
    cfg.merge_from_list(["SOLVER.BASE_LR", 0.01, "SOLVER.BIAS_LR_FACTOR", 2.0, "SOLVER.WEIGHT_DECAY", 1e-4,
                         "SOLVER.WEIGHT_DECAY_BIAS", 0.0, "SOLVER.DCONV_OFFSETS_LR_FACTOR", 0.5])
    net = Net()
    opt = make_optimizer(cfg, net)
    assert isinstance(opt, torch.optim.SGD) and opt.defaults["momentum"] == cfg.SOLVER.MOMENTUM
    settings = {}
    for group in opt.param_groups:
        for p in group["params"]:
            settings[id(p)] = (group["lr"], group["weight_decay"])
    assert settings[id(net.conv.weight)] == (0.01, 1e-4)
    assert settings[id(net.conv.bias)] == (0.02, 0.0)
    assert settings[id(net.dcn.offset.weight)] == (0.005, 1e-4)
    assert settings[id(net.dcn.offset.bias)] == (0.01, 0.0)
    assert id(net.frozen.weight) not in settings
    assert id(net.frozen.bias) in settings


def test_adamw_and_unknown_optimizer():
    cfg = default_cfg.clone()
    cfg.merge_from_list(["SOLVER.OPTIMIZER", "AdamW"])
    assert isinstance(make_optimizer(cfg, Net()), torch.optim.AdamW)
    cfg.merge_from_list(["SOLVER.OPTIMIZER", "Adam"])
    with pytest.raises(ValueError, match="SOLVER.OPTIMIZER"):
        make_optimizer(cfg, Net())


def test_warmup_multistep_matches_the_formula():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = WarmupMultiStepLR(opt, milestones=[6, 8], gamma=0.1, warmup_factor=0.25, warmup_iters=4)
    lrs = _lrs(sched, 10)
    expected = [0.25, 0.4375, 0.625, 0.8125, 1.0, 1.0, 0.1, 0.1, 0.01, 0.01]
    assert lrs == pytest.approx(expected)


def test_constant_warmup_and_cosine():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=2.0)
    sched = WarmupCosineLR(opt, max_iter=10, warmup_factor=0.5, warmup_iters=2, warmup_method="constant")
    lrs = _lrs(sched, 11)
    assert lrs[0] == pytest.approx(2.0 * 0.5 * 0.5 * (1 + math.cos(0)))
    assert lrs[5] == pytest.approx(2.0 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lrs[10] == pytest.approx(0.0, abs=1e-12)
    assert all(a >= b for a, b in zip(lrs[2:], lrs[3:]))


def test_scheduler_from_config_and_bad_values():
    cfg = default_cfg.clone()
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    assert isinstance(make_lr_scheduler(cfg, opt), WarmupMultiStepLR)
    cfg.merge_from_list(["SOLVER.LR_SCHEDULER", "WarmupCosineLR"])
    assert isinstance(make_lr_scheduler(cfg, opt), WarmupCosineLR)
    cfg.merge_from_list(["SOLVER.LR_SCHEDULER", "Poly"])
    with pytest.raises(ValueError, match="SOLVER.LR_SCHEDULER"):
        make_lr_scheduler(cfg, opt)
    with pytest.raises(ValueError, match="WARMUP_METHOD"):
        WarmupMultiStepLR(opt, [1], warmup_method="exp")
    with pytest.raises(ValueError, match="increasing"):
        WarmupMultiStepLR(opt, [5, 2])


def test_scheduler_state_round_trip():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = WarmupMultiStepLR(opt, milestones=[3], warmup_iters=2)
    _lrs(sched, 4)
    state = sched.state_dict()
    opt2 = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    sched2 = WarmupMultiStepLR(opt2, milestones=[3], warmup_iters=2)
    sched2.load_state_dict(state)
    assert sched2.last_epoch == sched.last_epoch
    assert sched2.get_lr() == pytest.approx(sched.get_lr())


@pytest.mark.parametrize("name", ["SGD", "AdamW"])
def test_fused_optimizer_on_cpu_steps_like_the_loop(name):
    """make_optimizer picks torch's fused step on CPU parameters; its updates match the
    per-parameter loop (same arithmetic, rounding aside)."""
    torch.manual_seed(0)
    # (no conv bias before the BN: its gradient is rounding noise, which Adam would amplify)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, bias=False), nn.BatchNorm2d(8), nn.Conv2d(8, 4, 1))
    cfg = default_cfg.clone()
    cfg.merge_from_list(["SOLVER.OPTIMIZER", name, "SOLVER.BASE_LR", 0.01])
    fused = make_optimizer(cfg, model)
    assert fused.defaults["fused"] is True
    reference_model = nn.Sequential(nn.Conv2d(3, 8, 3, bias=False), nn.BatchNorm2d(8), nn.Conv2d(8, 4, 1))
    reference_model.load_state_dict(model.state_dict())
    from fcos_core.solver.build import param_groups
    s = cfg.SOLVER
    groups = param_groups(reference_model, s.BASE_LR, s.WEIGHT_DECAY, s.BIAS_LR_FACTOR,
                          s.WEIGHT_DECAY_BIAS, s.DCONV_OFFSETS_LR_FACTOR)
    loop = (torch.optim.SGD(groups, lr=s.BASE_LR, momentum=s.MOMENTUM) if name == "SGD"
            else torch.optim.AdamW(groups, lr=s.BASE_LR))
    x = torch.randn(2, 3, 9, 9)
    for _ in range(3):
        for m, opt in ((model, fused), (reference_model, loop)):
            opt.zero_grad()
            m(x).square().mean().backward()
            opt.step()
    for a, b in zip(model.parameters(), reference_model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)  # 3 updates of ~0.01 each
    assert not torch.equal(model[2].bias, nn.Sequential(nn.Conv2d(8, 4, 1))[0].bias)
