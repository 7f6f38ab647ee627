"""image_io.read_image: the EXIF orientation applied (as annotation tools display images), grey,
palette, RGBA (alpha dropped), 16/32-bit grey scaled by the image's range, and errors for bad files."""
import numpy as np
import pytest
from PIL import Image

from fcos_core.data.datasets.image_io import (
    READ_ERRORS,
    exif_orientation,
    read_image,
    read_image_bgr,
    read_image_for_size,
)

# a white square at x 5..14, y 30..49 (pixel-inclusive) on black, as displayed: 40 wide, 60 high
DISPLAYED_BOX = (5, 30, 14, 49)


def displayed_picture():
    a = np.zeros((60, 40, 3), np.uint8)
    x1, y1, x2, y2 = DISPLAYED_BOX
    a[y1:y2 + 1, x1:x2 + 1] = 255
    return Image.fromarray(a)


# what the camera stores for each orientation: the displayed picture turned back
STORED = {6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}


def write_rotated_jpeg(path, orientation):
    """A JPEG whose stored pixels are the displayed picture turned back, tagged with ``orientation``."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    displayed_picture().transpose(STORED[orientation]).save(path, quality=95, exif=exif)
    return path


def mean_in(img, box):
    x1, y1, x2, y2 = box
    return float(np.asarray(img)[y1:y2 + 1, x1:x2 + 1].mean())


@pytest.mark.parametrize("orientation", [6, 8])
def test_exif_orientation_is_applied(tmp_path, orientation):
    path = write_rotated_jpeg(str(tmp_path / "r.jpg"), orientation)
    with Image.open(path) as raw:
        assert raw.size == (60, 40) and exif_orientation(raw) == orientation
    img = read_image(path)
    assert img.mode == "RGB" and img.size == (40, 60)
    assert mean_in(img, DISPLAYED_BOX) > 240  # the box lands on the object as displayed
    assert float(np.asarray(img).mean()) < 255 * 200 / 2400 + 5  # and nothing else is white
    same, ignored = read_image_for_size(path, (40, 60))
    assert ignored == 0 and np.array_equal(np.asarray(same), np.asarray(img))


def test_json_with_the_stored_size_gets_the_unrotated_image(tmp_path):
    path = write_rotated_jpeg(str(tmp_path / "r.jpg"), 6)
    img, ignored = read_image_for_size(path, (60, 40))
    assert ignored == 6 and img.size == (60, 40)
    with Image.open(path) as raw:
        assert np.array_equal(np.asarray(img), np.asarray(raw.convert("RGB")))
    # a size that is neither: the convention (EXIF applied) holds
    assert read_image_for_size(path, (50, 50))[0].size == (40, 60)


def test_image_without_exif_is_read_as_stored(tmp_path):
    path = str(tmp_path / "plain.jpg")
    displayed_picture().save(path, quality=95)
    img = read_image(path)
    assert img.size == (40, 60) and mean_in(img, DISPLAYED_BOX) > 240
    assert read_image_for_size(path, (60, 40))[1] == 0


def test_grey_palette_and_alpha_become_rgb(tmp_path):
    Image.fromarray(np.full((4, 5), 77, np.uint8), "L").save(tmp_path / "grey.png")
    pal = Image.new("P", (5, 4), 1)
    pal.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    pal.save(tmp_path / "palette.png")
    pal.save(tmp_path / "palette_t.png", transparency=1)  # the only colour is the transparent one
    rgba = np.zeros((4, 5, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 0  # red, fully transparent: alpha is dropped, not composited
    rgba[0, 0] = (1, 2, 3, 255)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(np.stack([np.full((4, 5), 50, np.uint8), np.zeros((4, 5), np.uint8)], -1), "LA").save(
        tmp_path / "la.png")
    expected = {"grey": (77, 77, 77), "palette": (10, 20, 30), "palette_t": (10, 20, 30), "rgba": (200, 0, 0),
                "la": (50, 50, 50)}
    for name, colour in expected.items():
        img = read_image(str(tmp_path / (name + ".png")))
        assert img.mode == "RGB" and img.size == (5, 4), name
        assert tuple(np.asarray(img)[3, 4]) == colour, name
    assert tuple(np.asarray(read_image(str(tmp_path / "rgba.png")))[0, 0]) == (1, 2, 3)


@pytest.mark.parametrize("dtype, ext, mode", [(np.uint16, "png", "I;16"), (np.int32, "tif", "I"),
                                              (np.float32, "tif", "F")])
def test_high_depth_grey_is_scaled_by_its_range_not_clipped(tmp_path, dtype, ext, mode):
    k = np.arange(256).reshape(16, 16)
    values = (1000 + 16 * k).astype(dtype)  # 1000..5080: PIL's convert("RGB") would make it all white
    path = str(tmp_path / ("deep." + ext))
    Image.fromarray(values).save(path)
    with Image.open(path) as raw:
        assert raw.mode == mode
    out = np.asarray(read_image(path))
    assert out.dtype == np.uint8 and out.shape == (16, 16, 3)
    assert np.array_equal(out[..., 0], k) and np.array_equal(out[..., 1], k) and np.array_equal(out[..., 2], k)


def test_constant_16_bit_image_is_black(tmp_path):
    Image.fromarray(np.full((3, 3), 40000, np.uint16)).save(tmp_path / "flat.png")
    assert not np.asarray(read_image(str(tmp_path / "flat.png"))).any()


def test_bgr_array_matches_the_rgb_image(tmp_path):
    path = write_rotated_jpeg(str(tmp_path / "r.jpg"), 8)
    bgr = read_image_bgr(path)
    assert bgr.shape == (60, 40, 3) and bgr.dtype == np.uint8 and bgr.flags["C_CONTIGUOUS"]
    assert np.array_equal(bgr[..., ::-1], np.asarray(read_image(path)))


def test_missing_and_corrupt_files_raise(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_image(str(tmp_path / "none.png"))
    (tmp_path / "bad.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(READ_ERRORS):
        read_image(str(tmp_path / "bad.png"))
    good = tmp_path / "good.jpg"
    displayed_picture().save(good, quality=95)
    (tmp_path / "cut.jpg").write_bytes(good.read_bytes()[:300])  # truncated
    with pytest.raises(READ_ERRORS):
        read_image(str(tmp_path / "cut.jpg"))


class RecordingDemo:
    """The part of COCODemo that fcos_core.cli.run uses; records the BGR arrays it is given."""

    def __init__(self):
        self.seen = []

    def compute_prediction(self, image):
        self.seen.append(image.copy())
        return "predictions"

    def select_top_predictions(self, predictions):
        return []

    def overlay(self, image, predictions):
        return image


def test_the_fcos_command_reads_images_as_the_datasets_do(tmp_path, capsys):
    from fcos_core.cli import run

    rotated = write_rotated_jpeg(str(tmp_path / "r.jpg"), 6)
    (tmp_path / "bad.png").write_bytes(b"\x89PNG not really")
    out = tmp_path / "out"
    out.mkdir()
    demo = RecordingDemo()
    assert run(demo, [rotated, str(tmp_path / "bad.png")], str(out), write_json=False) == 1
    assert len(demo.seen) == 1 and np.array_equal(demo.seen[0], read_image_bgr(rotated))
    assert demo.seen[0].shape == (60, 40, 3)  # displayed orientation
    assert "bad.png\tskipped: not a readable image" in capsys.readouterr().err
