"""fcos_core.utils.visualizer: class colours, labels on a filled background that never cover each other."""
import numpy as np
import pytest

from fcos_core.utils.visualizer import class_color, draw_detections, draw_labels, drawing_sizes, place_label


def _overlap(a, b):
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def test_each_class_has_its_own_stable_colour():
    colours = [class_color(v) for v in range(1, 81)]
    assert colours == [class_color(v) for v in range(1, 81)]
    assert len(set(colours)) == 80
    # consecutive classes are far apart (not shades of one colour)
    gaps = [np.abs(np.subtract(a, b)).sum() for a, b in zip(colours, colours[1:])]
    assert min(gaps) > 60


@pytest.mark.parametrize("size", [(300, 300), (800, 1333)])
def test_labels_of_overlapping_boxes_do_not_cover_each_other(size):
    h, w = size
    image = np.zeros((h, w, 3), np.uint8)
    # three nearly identical boxes (the "trossj0.50.55" case) and one at the top edge
    boxes = [[40, 60, 200, 220], [42, 62, 198, 224], [45, 58, 205, 215], [10, 0, 120, 90]]
    rects = draw_labels(image, boxes, [1, 2, 3, 4], ["cross 0.55", "triangle 0.50", "star 0.41", "disc 0.30"])
    assert len(rects) == 4
    for i, a in enumerate(rects):
        assert 0 <= a[0] and 0 <= a[1] and a[2] <= w and a[3] <= h
        for b in rects[i + 1:]:
            assert not _overlap(a, b), (a, b)
    # the background is filled with the class colour (text aside, most of the rectangle)
    x1, y1, x2, y2 = rects[0]
    patch = image[y1:y2, x1:x2].reshape(-1, 3)
    assert (patch == np.array(class_color(1), np.uint8)).all(axis=1).mean() > 0.5


def test_text_grows_with_the_image():
    assert drawing_sizes(300, 400)[1] < drawing_sizes(800, 1333)[1]
    assert drawing_sizes(1500, 2000)[0] > drawing_sizes(300, 400)[0]


def test_a_label_goes_above_its_box_when_there_is_room():
    assert place_label((50, 100, 150, 200), (40, 20), [], 300, 300) == (50, 80, 90, 100)
    # the spot above is taken: inside the top of the box instead
    assert place_label((50, 100, 150, 200), (40, 20), [(50, 80, 90, 100)], 300, 300) == (50, 100, 90, 120)


def test_draw_detections_writes_best_score_first_and_in_place():
    image = np.zeros((200, 200, 3), np.uint8)
    out = draw_detections(image, [[10, 10, 100, 100], [12, 12, 98, 98]], [1, 2], [0.3, 0.9],
                          names=["__background", "a", "b"])
    assert out is image and image.any()
    # the box outline of class 1 is drawn in its colour
    assert (image[50, 10] == np.array(class_color(1), np.uint8)).all()


def test_overview_picture_puts_pictures_over_the_curves(tmp_path):
    import cv2

    from fcos_core.utils.visualizer import overview_picture

    paths = []
    for i, shape in enumerate([(100, 200), (300, 150), (64, 64)]):
        paths.append(str(tmp_path / f"p{i}.png"))
        cv2.imwrite(paths[-1], np.full(shape + (3,), 40 * i, np.uint8))
    cv2.imwrite(str(tmp_path / "curves.png"), np.zeros((400, 1100, 3), np.uint8))
    out = cv2.imread(overview_picture(paths, str(tmp_path / "curves.png"), str(tmp_path / "o.png"), tile=128))
    assert out.shape == (128 + round(400 * 384 / 1100), 384, 3)
    with pytest.raises(FileNotFoundError, match="nope.png"):
        overview_picture([str(tmp_path / "nope.png")], str(tmp_path / "curves.png"), str(tmp_path / "x.png"))


def test_label_texts_name_each_detection_and_fall_back_to_the_id():
    from fcos_core.utils.visualizer import label_texts

    names = ["__background", "a", "b"]
    assert label_texts([1, 2, 7], [0.5, 0.25, 0.125], names) == ["a 0.50", "b 0.25", "7 0.12"]
    assert label_texts([2], None, names) == ["b"] and label_texts([3], [1.0]) == ["3 1.00"]
