#!/usr/bin/env python
"""Run a trained FCOS on a camera or a video file, shown live or written to a video file.

    python demo/webcam.py [--config-file F] [--weights W] [--video-input 0 | --video-input VIDEO]
        [--output out.mp4] [--min-image-size N] [--thresholds T[,T...] | --thresholds-file JSON]
        [--categories-from JSON] [--max-frames N] [KEY VALUE ...]

Frames are annotated one by one; the time per frame is printed. Where a display exists they are
shown in a window; ``--output`` writes them to a video file (``.mp4``: mp4v, ``.avi``: MJPG) at
the input's frame rate, and is required on a machine without a display. The run stops at the end
of the video, after ``--max-frames`` frames, on Esc in the window, or on Ctrl-C. The model defaults
as in demo/fcos_demo.py: torchvision's COCO FCOS ``fcos_resnet50_fpn_coco`` with its config.
"""
import argparse
import os
import sys
import time

import cv2

from fcos_core.engine.demo_cli import add_demo_arguments, demo_from_args, display_problem, show

ESC = 27
# fourcc per output extension; anything else gets mp4v
FOURCC = {".avi": "MJPG", ".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".mkv": "XVID"}
DEFAULT_FPS = 30.0


def build_parser():
    """The command-line parser (trailing KEY VALUE config overrides)."""
    parser = argparse.ArgumentParser(description="FCOS demo on a camera or a video file")
    add_demo_arguments(parser, default_min_image_size=224)
    parser.add_argument("--video-input", default="0", metavar="INDEX|FILE",
                        help="camera index (default 0) or a video file")
    parser.add_argument("--max-frames", type=int, default=0, help="stop after this many frames (0: no limit)")
    parser.add_argument("opts", nargs="*", metavar="KEY VALUE", help="config overrides")
    return parser


def open_capture(source):
    """``cv2.VideoCapture`` of a camera index ("0") or a video file; SystemExit when it cannot open."""
    if source.isdigit():
        capture = cv2.VideoCapture(int(source))
    elif not os.path.isfile(source):
        raise SystemExit("error: no such video file: {}".format(source))
    else:
        capture = cv2.VideoCapture(source)
    if not capture.isOpened():
        raise SystemExit("error: cannot open video input {!r}".format(source))
    return capture


def open_writer(path, fps, size):
    """``cv2.VideoWriter`` for ``path`` at ``fps`` with frames of ``size`` = (width, height)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fourcc = FOURCC.get(os.path.splitext(path)[1].lower(), "mp4v")
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*fourcc), fps, size)
    if not writer.isOpened():
        raise SystemExit("error: cannot write video {} with codec {}".format(path, fourcc))
    return writer


def frame_rate(capture):
    """The input's frames per second, or DEFAULT_FPS when it does not say (cameras often do not)."""
    fps = capture.get(cv2.CAP_PROP_FPS)
    return fps if fps and 0 < fps <= 240 else DEFAULT_FPS


def run(demo, capture, output, window, max_frames):
    """Annotate frames until the input ends, ``max_frames`` is reached or Esc is pressed.

    Returns:
        int: the number of frames processed.
    """
    writer, count = None, 0
    try:
        while not max_frames or count < max_frames:
            ok, frame = capture.read()
            if not ok:
                break
            start = time.time()
            composite = demo.run_on_opencv_image(frame)
            print("frame {}\ttime: {:.2f} s / img".format(count, time.time() - start), flush=True)
            count += 1
            if output:
                if writer is None:
                    height, width = composite.shape[:2]
                    writer = open_writer(output, frame_rate(capture), (width, height))
                writer.write(composite)
            if window:
                show("FCOS detections", composite)
                if cv2.waitKey(1) == ESC:
                    break
    except KeyboardInterrupt:
        print("interrupted")
    finally:
        if writer is not None:
            writer.release()
    return count


def main(argv=None):
    """Parse arguments, check that results can be shown or saved, then run on the input."""
    parser = build_parser()
    args = parser.parse_intermixed_args(argv)
    problem = "--no-window was given" if args.no_window else display_problem()
    if problem and not args.output:
        parser.exit(2, "{}: error: cannot show the results: {}. Pass --output FILE.mp4 to write "
                       "the annotated video instead.\n".format(parser.prog, problem))
    capture = open_capture(args.video_input)
    try:
        demo = demo_from_args(args, args.opts)
        count = run(demo, capture, args.output, problem is None, args.max_frames)
    finally:
        capture.release()
        if problem is None:
            cv2.destroyAllWindows()
    if args.output:
        print("wrote {} frame(s) to {}".format(count, args.output))
    return 0 if count else 1


if __name__ == "__main__":
    sys.exit(main())
