"""SOLVER.CHECKPOINT_KEEP: the last N periodic checkpoints stay, older ones go only once the new one is
written and last_checkpoint names it, and the file last_checkpoint names is never deleted."""
import os

import pytest
import torch

from fcos_core.config import load_config
from fcos_core.engine.trainer import TrainOptions, do_train, make_train_options
from fcos_core.utils.checkpoint import LAST_CHECKPOINT, Checkpointer
from fcos_core.utils.checkpoint_keep import periodic_checkpoints, prune_checkpoints

OTHERS = ("model_final.pth", "model_best.pth", "model_last_good.pth", "model_0000004_finetuned.pth", "notes.txt")


def _folder(tmp_path, iterations, last):
    for it in iterations:
        (tmp_path / f"model_{it:07d}.pth").write_bytes(b"x")
    for name in OTHERS:
        (tmp_path / name).write_bytes(b"y")
    if last is not None:
        (tmp_path / LAST_CHECKPOINT).write_text(last)
    return tmp_path


def _names(folder):
    return sorted(p.name for p in folder.iterdir())


def test_keeps_the_newest_and_every_other_file(tmp_path):
    folder = _folder(tmp_path, [2, 4, 6, 8, 10000000], "model_10000000.pth")  # 8 digits past 9,999,999
    assert [it for it, _ in periodic_checkpoints(folder)] == [2, 4, 6, 8, 10000000]
    deleted = prune_checkpoints(str(folder), 2)
    assert sorted(os.path.basename(p) for p in deleted) == ["model_0000002.pth", "model_0000004.pth",
                                                            "model_0000006.pth"]
    assert _names(folder) == sorted(["model_0000008.pth", "model_10000000.pth", LAST_CHECKPOINT, *OTHERS])
    assert prune_checkpoints(str(folder), 2) == []  # nothing more to do
    assert prune_checkpoints(str(folder), 0) == [] and prune_checkpoints(str(folder), 1) != []
    assert (folder / "model_10000000.pth").exists()


@pytest.mark.parametrize("last", [None, "", "model_0000004.pth", "model_0000012.pth", "model_final.pth"])
def test_nothing_is_deleted_unless_last_checkpoint_names_one_of_the_newest(tmp_path, last):
    """No pointer, an empty one, one at an older checkpoint (the user pointed it back), at a file that
    is not there or at model_final: the state to resume from is not a new periodic file; keep all."""
    folder = _folder(tmp_path, [2, 4, 6, 8], last)
    before = _names(folder)
    assert prune_checkpoints(str(folder), 1) == []
    assert _names(folder) == before


def test_make_train_options_reads_and_checks_the_key():
    assert make_train_options(load_config(None, ["SOLVER.CHECKPOINT_KEEP", "3"])).checkpoint_keep == 3
    assert make_train_options(load_config(None, [])).checkpoint_keep == 0  # default: keep all, as before
    with pytest.raises(ValueError, match="SOLVER.CHECKPOINT_KEEP.*-1"):
        make_train_options(load_config(None, ["SOLVER.CHECKPOINT_KEEP", "-1"]))


class _Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(2, 1)

    def forward(self, images, targets):
        return {"loss_cls": (self.lin(images.tensors) ** 2).sum()}


class _Images:
    tensors = torch.ones(1, 2)

    def to(self, device):
        return self


def test_training_keeps_the_last_n_and_never_deletes_the_resume_point(tmp_path, monkeypatch):
    model = _Model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda it: 1.0)
    checkpointer = Checkpointer(model, opt, sched, str(tmp_path), save_to_disk=True)
    removed = []
    real_remove = os.remove

    def remove(path):
        # every deletion happens with last_checkpoint naming an existing newer file
        last = checkpointer.get_checkpoint_file()
        assert os.path.exists(last) and os.path.abspath(path) != os.path.abspath(last)
        assert periodic_checkpoints(str(tmp_path))[-1][1] == last
        removed.append(os.path.basename(path))
        real_remove(path)

    monkeypatch.setattr(os, "remove", remove)
    do_train(model, [(_Images(), [], ())] * 7, opt, sched, checkpointer, {"iteration": 0},
             TrainOptions(max_iter=7, checkpoint_period=1, checkpoint_keep=2, log_period=100))
    assert removed == [f"model_{i:07d}.pth" for i in (1, 2, 3, 4)]
    assert _names(tmp_path) == [LAST_CHECKPOINT, "model_0000005.pth", "model_0000006.pth", "model_final.pth"]
    assert (tmp_path / LAST_CHECKPOINT).read_text() == "model_final.pth"
