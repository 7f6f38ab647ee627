"""The COCOeval implementations that can compute the COCO numbers (TEST.COCO_EVAL_BACKEND).

- ``"pycocotools"``: the reference (pure-Python ``evaluate`` / ``accumulate``);
- ``"faster_coco_eval"``: faster-coco-eval's ``COCOeval_faster`` (the same algorithm with the
  per-image matching and the accumulation in C++), the optional
  extra ``pip install "fcos_core[eval]"``;
- ``"auto"``: faster_coco_eval when it is installed, else pycocotools.

Both give the same ``stats`` (the twelve numbers) and the same ``eval["precision"]`` [T, R, K, A, M],
``eval["recall"]`` [T, K, A, M] and ``eval["scores"]`` [T, R, K, A, M] arrays (T 10 IoU thresholds,
R 101 recall points, K categories, A 4 area ranges, M 3 detection limits), which the per-class AP
and the score thresholds read; tests/evaluation/test_coco_eval_backends.py checks it.
"""
import contextlib
import importlib
import importlib.metadata
import io

from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

BACKENDS = ("auto", "pycocotools", "faster_coco_eval")
EXTRA_HINT = 'pip install "fcos_core[eval]" (or pip install faster-coco-eval)'


def _import_faster_coco_eval():
    """The faster_coco_eval module, or None when it is not installed (patched by the tests)."""
    try:
        return importlib.import_module("faster_coco_eval")
    except ImportError:
        return None


def resolve_backend(name):
    """The backend that ``name`` (a value of TEST.COCO_EVAL_BACKEND) stands for.

    Returns:
        str: "pycocotools" or "faster_coco_eval" ("auto" resolved).

    Raises:
        ValueError: ``name`` is not one of :data:`BACKENDS`.
        ImportError: "faster_coco_eval" asked for but not installed (one line naming the extra).
    """
    if name not in BACKENDS:
        raise ValueError("TEST.COCO_EVAL_BACKEND: unknown evaluator {!r}; choose one of {}".format(
            name, ", ".join(BACKENDS)))
    if name == "pycocotools":
        return name
    if _import_faster_coco_eval() is not None:
        return "faster_coco_eval"
    if name == "faster_coco_eval":
        raise ImportError("TEST.COCO_EVAL_BACKEND 'faster_coco_eval' needs the faster-coco-eval package, "
                          "which is not installed: " + EXTRA_HINT)
    return "pycocotools"


def backend_version(backend):
    """The installed version of the package behind ``backend`` (a resolved name), e.g. "2.0.11"."""
    module = "pycocotools" if backend == "pycocotools" else "faster_coco_eval"
    try:
        return importlib.metadata.version(module.replace("_", "-"))
    except importlib.metadata.PackageNotFoundError:
        return getattr(importlib.import_module(module), "__version__", "unknown")


def run_cocoeval(coco_gt, coco_results, iou_type="bbox", img_ids=None, backend="auto"):
    """Evaluate, accumulate and summarize ``coco_results`` against ``coco_gt`` with ``backend``.

    Arguments:
        coco_gt: the ground truth, a pycocotools COCO (or any object with its ``dataset`` dict:
            "images", "annotations", "categories").
        coco_results (list[dict]): ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}``
            in pixels; not changed (the evaluators get copies); may be empty (all AP 0).
        iou_type (str): "bbox".
        img_ids (list or None): the json image ids to evaluate; None: every image of ``coco_gt``.
        backend (str): a value of TEST.COCO_EVAL_BACKEND.

    Returns:
        (COCOeval, str, str): the summarized evaluator (``stats`` [12], ``eval`` arrays,
        ``params.catIds`` sorted json ids, ``cocoGt`` with ``cats``), the resolved backend name and
        the text the evaluator printed.
    """
    backend = resolve_backend(backend)
    run = _run_faster_coco_eval if backend == "faster_coco_eval" else _run_pycocotools
    coco_eval, text = run(coco_gt, coco_results, iou_type, img_ids)
    return coco_eval, backend, text


def _run_pycocotools(coco_gt, coco_results, iou_type, img_ids):
    captured = io.StringIO()
    with contextlib.redirect_stdout(captured):
        coco_dt = _load_results(coco_gt, coco_results)
        coco_eval = COCOeval(coco_gt, coco_dt, iou_type)
        if img_ids is not None:
            coco_eval.params.imgIds = sorted(img_ids)
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return coco_eval, captured.getvalue()


def _run_faster_coco_eval(coco_gt, coco_results, iou_type, img_ids):
    fce = _import_faster_coco_eval()
    lines = []
    gt = coco_gt if isinstance(coco_gt, fce.COCO) else _faster_coco(fce, coco_gt.dataset)
    coco_dt = _faster_detections(fce, gt, coco_results)
    coco_eval = fce.COCOeval_faster(gt, coco_dt, iou_type, print_function=lines.append)
    if img_ids is not None:
        coco_eval.params.imgIds = sorted(img_ids)
    coco_eval.evaluate()
    coco_eval.accumulate()
    coco_eval.summarize()
    return coco_eval, "\n".join(str(line) for line in lines)


def _faster_coco(fce, dataset):
    """faster-coco-eval's COCO over the same ``dataset`` dict (lists shared, not copied)."""
    gt = fce.COCO(print_function=lambda *args: None)
    gt.dataset = {k: v for k, v in dataset.items()}
    gt.createIndex()
    return gt


def _faster_detections(fce, gt, coco_results):
    """faster-coco-eval's COCO of box detections: what ``COCO.loadRes`` makes of them (new dicts with
    ``id`` 1..N, ``area`` w * h, ``iscrowd`` 0) without the box-shaped polygon it also adds, which
    box evaluation never reads and which took 3/4 of loadRes's time (0.42 -> 0.09 s for 30,000)."""
    unknown = {r["image_id"] for r in coco_results} - set(gt.imgs)
    if unknown:
        raise ValueError("detections on image ids that the ground truth does not have: {}".format(sorted(unknown)[:10]))
    anns = [{"image_id": r["image_id"], "category_id": r["category_id"], "bbox": r["bbox"], "score": r["score"],
             "area": r["bbox"][2] * r["bbox"][3], "id": i + 1, "iscrowd": 0} for i, r in enumerate(coco_results)]
    coco_dt = fce.COCO(print_function=lambda *args: None)
    coco_dt.dataset = {"images": gt.dataset.get("images", []), "categories": gt.dataset.get("categories", []),
                       "annotations": anns}
    coco_dt.createIndex()
    return coco_dt


def _load_results(coco_gt, coco_results):
    """pycocotools' COCO of the detections; ``COCO.loadRes`` fails on an empty list, so build that one by hand."""
    if coco_results:
        return coco_gt.loadRes([dict(r) for r in coco_results])
    coco_dt = COCO()
    coco_dt.dataset = {
        "images": list(coco_gt.dataset.get("images", [])),
        "categories": list(coco_gt.dataset.get("categories", [])),
        "annotations": [],
    }
    coco_dt.createIndex()
    return coco_dt
