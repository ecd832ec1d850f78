"""Image loading on messy field data (issue 7) and the CLIBD image transforms."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from clibd_toolkit.errors import DataError, DataFileError
from clibd_toolkit.images import MAX_PIXELS, ImageTransform, load_image

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def _save(img: Image.Image, path: Path, fmt: str, **kw) -> Path:
    img.save(path, fmt, **kw)
    return path


@pytest.fixture
def rgb():
    arr = np.zeros((40, 60, 3), dtype=np.uint8)
    arr[:, :30] = (200, 30, 10)  # left half red
    return Image.fromarray(arr)


def test_missing_file_names_the_record(tmp_path):
    with pytest.raises(DataFileError, match="rec-1: image file .* does not exist"):
        load_image(tmp_path / "nope.jpg", record_id="rec-1")


def test_zero_byte_file_and_empty_bytes(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(DataError, match="empty \\(0 bytes\\)"):
        load_image(tmp_path / "empty.jpg", record_id="r")
    with pytest.raises(DataError, match="empty"):
        load_image(b"", record_id="r")


def test_truncated_jpeg_is_refused(tmp_path, rgb):
    data = io.BytesIO()
    rgb.resize((400, 300)).save(data, "JPEG")
    path = tmp_path / "cut.jpg"
    path.write_bytes(data.getvalue()[: len(data.getvalue()) // 2])
    with pytest.raises(DataError, match="truncated or corrupt"):
        load_image(path, record_id="cut")


def test_text_file_named_jpg(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("this is a field note, not a photo")
    with pytest.raises(DataError, match="not an image"):
        load_image(path, record_id="n1")


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGBA", "CMYK", "I;16", "1"])
def test_every_mode_becomes_8bit_rgb(tmp_path, rgb, mode):
    src = rgb.convert("RGBA") if mode in ("LA", "RGBA") else rgb
    if mode == "I;16":
        arr16 = (np.asarray(rgb.convert("L"), dtype=np.uint16) * 257)
        img = Image.fromarray(arr16)
        path = _save(img, tmp_path / "x16.png", "PNG")
    elif mode == "CMYK":
        path = _save(src.convert("CMYK"), tmp_path / "x.jpg", "JPEG", quality=95)
    else:
        path = _save(src.convert(mode), tmp_path / "x.png", "PNG")
    out = load_image(path)
    assert out.mode == "RGB" and out.size == (60, 40)
    arr = np.asarray(out).astype(int)
    # the red half stays brighter than the black half in every conversion (grayscale keeps luminance)
    assert arr[:, :30].mean() > arr[:, 30:].mean() + 20


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path):
    arr16 = np.full((10, 10), 32768, dtype=np.uint16)  # mid-grey in 16 bit
    path = _save(Image.fromarray(arr16), tmp_path / "g.png", "PNG")
    value = np.asarray(load_image(path))[0, 0, 0]
    assert 120 <= value <= 135  # 32768/65535*255 = 127.5, not 255 (clipped)


def test_rgba_transparency_is_composited_on_white(tmp_path):
    img = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    out = load_image(_save(img, tmp_path / "t.png", "PNG"))
    assert np.asarray(out).min() == 255


def test_exif_orientation_is_applied(tmp_path, rgb):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise for display
    path = _save(rgb, tmp_path / "rot.jpg", "JPEG", exif=exif.tobytes(), quality=95)
    out = load_image(path)
    assert out.size == (40, 60)  # width/height swapped
    arr = np.asarray(out).astype(int)
    assert arr[:30].mean() > arr[30:].mean()  # the red half is now on top


def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    # a 1-bit PNG of 100,000 x 1,000 = 1e8 pixels compresses to a few kB; decoding to RGB would need 300 MB
    bomb = Image.new("1", (100_000, 1_000))
    path = _save(bomb, tmp_path / "bomb.png", "PNG", optimize=True)
    assert path.stat().st_size < 200_000
    with pytest.raises(DataError, match="decompression bomb"):
        load_image(path, record_id="b")
    assert 100_000 * 1_000 > MAX_PIXELS


def test_huge_but_allowed_and_tiny_images(tmp_path):
    big = load_image(_save(Image.new("RGB", (4000, 3000), (10, 200, 10)), tmp_path / "big.jpg", "JPEG"))
    assert big.size == (4000, 3000)
    with pytest.raises(DataError, match="at least 4"):
        load_image(_save(Image.new("RGB", (2, 2)), tmp_path / "tiny.png", "PNG"), record_id="t")
    tensor = ImageTransform(32, 36)(load_image(_save(Image.new("RGB", (5, 9)), tmp_path / "small.png", "PNG")))
    assert tensor.shape == (3, 32, 32)


def test_arrays_and_bytes(rgb):
    buf = io.BytesIO()
    rgb.save(buf, "PNG")
    assert np.array_equal(np.asarray(load_image(buf.getvalue())), np.asarray(rgb))
    assert load_image(np.asarray(rgb)).size == (60, 40)
    assert load_image(np.ones((5, 6), dtype=np.float32)).mode == "RGB"
    with pytest.raises(DataError, match="shape"):
        load_image(np.zeros((2, 3, 4, 5), dtype=np.uint8))


def test_eval_transform_is_resize_short_side_then_center_crop():
    # reference: 100x50 image, short side -> 36 gives 72x36, centre crop 32 keeps x in [20, 52)
    arr = np.zeros((50, 100, 3), dtype=np.uint8)
    arr[:, :50] = 255  # left half white
    out = ImageTransform(32, 36, "none")(Image.fromarray(arr))
    assert out.shape == (3, 32, 32) and out.dtype == torch.float32
    # white covers resized columns [0, 36): crop columns 0..15 are white, 17..31 black
    assert out[:, :, :15].min() > 0.95 and out[:, :, 17:].max() < 0.05


def test_normalisations():
    img = Image.new("RGB", (8, 8), (255, 255, 255))
    assert torch.allclose(ImageTransform(8, 8, "none")(img), torch.ones(3, 8, 8))
    assert torch.allclose(ImageTransform(8, 8, "half")(img), torch.ones(3, 8, 8))
    imnet = ImageTransform(8, 8, "imagenet")(img)[:, 0, 0]
    assert torch.allclose(imnet, (1 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225]))


def test_train_augmentation_is_seeded():
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 80, 3), dtype=np.uint8))
    t = ImageTransform(32, 36, "none", train=True)
    a = t(img, np.random.default_rng(5))
    b = t(img, np.random.default_rng(5))
    c = t(img, np.random.default_rng(6))
    assert torch.equal(a, b) and not torch.equal(a, c) and a.shape == (3, 32, 32)


@pytest.mark.skipif(not (SHARED / "bioscan1m-raw-wells").is_dir(), reason="../shared/data is not present")
def test_real_bioscan_photos_load_and_transform():
    paths = sorted((SHARED / "bioscan1m-raw-wells" / "images").glob("*.jpg"))[:5]
    assert paths
    for p in paths:
        assert ImageTransform()(load_image(p)).shape == (3, 224, 224)
