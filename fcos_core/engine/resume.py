"""What a training checkpoint holds besides model, optimizer and scheduler, written and read back in
one place: the iteration (``arguments``), the random state, the float16 gradient scaler's state,
and the best evaluation so far (SOLVER.TEST_PERIOD; see :mod:`fcos_core.engine.periodic_eval`).

:func:`resume_state` is what :func:`fcos_core.engine.trainer.do_train` passes to
``checkpointer.save``; :func:`restore_resume_state` reads the ``extra`` dict that
``DetectronCheckpointer.load`` returns (the original's checkpoints hold only "iteration").
"""
from fcos_core.utils.rng import rng_state, set_rng_state

ITERATION = "iteration"
RNG_STATE = "rng_state"
SCALER = "scaler"
BEST = "best"  # {"value": float, "dataset": str, "metric": "AP", "iteration": int} of model_best.pth


def resume_state(arguments, grad_scaler=None, iteration=None):
    """dict(``arguments``, rng_state=..., scaler=... when ``grad_scaler`` is given), with
    "iteration" replaced by ``iteration`` when that is given (the last good state of a stopped run)."""
    state = dict(arguments, **{RNG_STATE: rng_state()})
    if iteration is not None:
        state[ITERATION] = int(iteration)
    if grad_scaler is not None:
        state[SCALER] = grad_scaler.state_dict()
    return state


def restore_resume_state(extra, grad_scaler=None):
    """Restore the random state and ``grad_scaler`` from a loaded checkpoint's ``extra`` dict, when it
    holds them; returns the ``arguments`` dict to train on: {"iteration": 0} for a fresh start, with
    "best" (the best evaluation so far) when the checkpoint holds one."""
    if RNG_STATE in extra:
        set_rng_state(extra[RNG_STATE])
    if grad_scaler is not None and SCALER in extra:
        grad_scaler.load_state_dict(extra[SCALER])
    arguments = {ITERATION: int(extra.get(ITERATION, 0))}
    if isinstance(extra.get(BEST), dict):
        arguments[BEST] = dict(extra[BEST])
    return arguments
