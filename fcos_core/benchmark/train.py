"""The training part of the benchmark: one SGD step of ours and torchvision's FCOS and RetinaNet,
timed interleaved, with the peak memory of each measured in a child process."""
import statistics
from collections import OrderedDict

import torch

from fcos_core.benchmark.memory import peak_memory_in_child
from fcos_core.benchmark.models import OURS, TRAIN_MODELS, build_ours, build_torchvision, make_boxes, make_image, to_ours
from fcos_core.benchmark.timing import interleaved, paired_ratio

SGD = dict(lr=0.01, momentum=0.9, weight_decay=1e-4)


def bench_train(args):
    """Rows of the training table: step time (interleaved) and, unless --no-memory, peak memory."""
    device = args.device
    size = tuple(args.size)
    steps = OrderedDict()
    precisions = ["fp32"] + (["amp"] if device == "cuda" else [])
    for prec in precisions:
        for name in TRAIN_MODELS:
            steps[(name, prec)] = make_train_step(name, size, args.seed, device, amp=prec == "amp")
    times = interleaved(steps, args.runs, args.warmup, device)
    memory = {}
    if not args.no_memory:
        for key in steps:
            memory[key] = peak_memory_in_child(key[0], args, amp=key[1] == "amp")
    rows = []
    for (name, prec), t in times.items():
        med = statistics.median(t)
        ours_med = statistics.median(times[(OURS, prec)])
        mem = memory.get((name, prec), {})
        ours_mem = memory.get((OURS, prec), {})
        peak = mem.get("peak_total_mib")
        rows.append(
            OrderedDict(
                model=name,
                precision=prec,
                median_ms=1e3 * med,
                min_ms=1e3 * min(t),
                ratio_ours_over_this=ours_med / med,
                paired_ratio=paired_ratio(times[(OURS, prec)], t),
                peak_step_mib=mem.get("peak_step_mib"),
                held_mib=mem.get("held_mib"),
                peak_total_mib=peak,
                memory_ratio_ours_over_this=(ours_mem.get("peak_total_mib") / peak) if peak and ours_mem.get("peak_total_mib") else None,
                max_rss_mib=mem.get("max_rss_mib"),
                memory_method=mem.get("method"),
                memory_error=mem.get("error"),
                last_loss=steps[(name, prec)].last_loss,
                times_ms=[1e3 * v for v in t],
            )
        )
    return rows


class TrainStep:
    """Callable: one SGD step of one model on a fixed batch of 2 images with random boxes."""

    def __init__(self, name, size, seed, device, amp=False):
        torch.manual_seed(seed)
        self.name, self.device, self.amp = name, device, amp
        imgs = [make_image(size, seed + i) for i in range(2)]
        boxes = make_boxes(size, 2, seed)
        if name == OURS:
            from fcos_core.structures.bounding_box import BoxList

            from fcos_core.structures.image_list import to_image_list

            self.model, cfg = build_ours(device)
            # batched as the data loader does, and in channels_last as tools/train_net.py and the
            # trainer put model and images with SOLVER.CHANNELS_LAST
            self.images = to_image_list([to_ours(im, cfg).to(device) for im in imgs], cfg.DATALOADER.SIZE_DIVISIBILITY)
            if cfg.SOLVER.CHANNELS_LAST:
                self.model.to(memory_format=torch.channels_last)
                self.images.tensors = self.images.tensors.contiguous(memory_format=torch.channels_last)
            self.targets = []
            for b, lab in boxes:
                t = BoxList(b.to(device), (size[1], size[0]), mode="xyxy")
                t.add_field("labels", lab.to(device))
                self.targets.append(t)
        else:
            self.model = build_torchvision(name, size, device)
            self.images = [im.to(device) for im in imgs]
            # FCOS / RetinaNet: 0-based classes; (Faster R-CNN would keep 0 for the background)
            self.targets = [{"boxes": b.to(device), "labels": (lab - 1).to(device)} for b, lab in boxes]
        self.model.train()
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.SGD(params, **SGD)
        self.scaler = torch.amp.GradScaler("cuda") if amp else None
        self.last_loss = None

    def __call__(self):
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.float16, enabled=self.amp):
            losses = self.model(self.images, self.targets)
        loss = sum(losses.values())
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        self.last_loss = float(loss.detach())
        return loss

    def held_bytes(self):
        """Tensors held between steps: parameters, buffers and optimizer state."""
        n = sum(p.numel() * p.element_size() for p in self.model.parameters())
        n += sum(b.numel() * b.element_size() for b in self.model.buffers())
        for state in self.optimizer.state.values():
            n += sum(v.numel() * v.element_size() for v in state.values() if torch.is_tensor(v))
        return n


def make_train_step(name, size, seed, device, amp=False):
    """A :class:`TrainStep` of model ``name`` (one of TRAIN_MODELS) on ``size`` images."""
    return TrainStep(name, size, seed, device, amp)
