"""Image loading (safe, for messy field data) and image transforms (pure PIL + torch, no torchvision).

:func:`load_image` accepts a path, encoded bytes, a PIL image or an array, and always returns an 8-bit RGB PIL
image, or raises a :class:`~clibd_toolkit.errors.DataError` naming the record and the problem. It refuses
decompression bombs before decoding, applies EXIF orientation, and converts grayscale, palette, RGBA, CMYK and
16-bit images.

:class:`ImageTransform` reproduces CLIBD's preprocessing (reference section 1.3): eval = resize the short side to
256 then centre-crop 224; train = random resized crop, horizontal and vertical flips and rotation up to 45 degrees.
The eval resize runs either on the 8-bit image with PIL (``resample="pil"``, the toolkit's own models) or, for the
released CLIBD models (``resample="tensor"``), exactly as their ``ToTensor() -> Resize(256, antialias=True) ->
CenterCrop(224)``: pixels to float in [0, 1] first, then torchvision's tensor resize, which is
``torch.nn.functional.interpolate(mode="bilinear", align_corners=False, antialias=True)`` to the size torchvision
computes (short side 256, long side ``int(256 * long / short)``, truncated), then the centre crop
(offsets ``int(round((side - 224) / 2))``). No torchvision is needed.
"""
from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import DataError, DataFileError

#: images above this many pixels are refused before decoding (BIOSCAN originals are 6.2 MP)
MAX_PIXELS = 64_000_000
#: images below this side length cannot be meaningfully resized to the model input
MIN_SIDE = 4

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _fail(record_id: Any, what: str, exc: type[DataError] = DataError) -> DataError:
    prefix = f"record {record_id}: " if record_id is not None else ""
    return exc(prefix + what, record_id=None if record_id is None else str(record_id))


#: prefix -> function returning the encoded bytes of an image reference string (e.g. rows of an HDF5 file)
_IMAGE_SOURCES: dict[str, Any] = {}


def register_image_source(prefix: str, fetch: Any) -> None:
    """Let :func:`load_image` resolve reference strings starting with ``prefix`` (e.g. ``"hdf5://"``) through
    ``fetch(reference) -> bytes``. Readers of container formats use this to keep images lazy."""
    _IMAGE_SOURCES[prefix] = fetch


def _register_builtin_sources() -> None:
    """The container formats whose reader keeps images lazy: ``hdf5://`` rows of a CLIBD HDF5 file (the arrow
    points from images to that reader; readers never import this module)."""
    from .readers.clibd_hdf5 import HDF5_PREFIX, fetch_hdf5_image

    _IMAGE_SOURCES.setdefault(HDF5_PREFIX, fetch_hdf5_image)


def load_image(source: Any, *, record_id: Any = None, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Open and decode an image into 8-bit RGB.

    Args:
        source: file path (str/Path), encoded bytes, a PIL image, or a (H, W[, C]) uint8/uint16/float array.
        record_id: named in error messages.
        max_pixels: larger images are refused without decoding (decompression-bomb guard).

    Raises:
        DataFileError: the file does not exist.
        DataError: empty, truncated, not an image, too large, or too small.
    """
    if isinstance(source, str) and "://" in source[:16]:
        if not any(source.startswith(p) for p in _IMAGE_SOURCES):
            _register_builtin_sources()
        for prefix, fetch in _IMAGE_SOURCES.items():
            if source.startswith(prefix):
                source = fetch(source)
                break
    if isinstance(source, Image.Image):
        img = source
    elif isinstance(source, np.ndarray):
        img = _from_array(source, record_id)
    else:
        if isinstance(source, (bytes, bytearray, memoryview)):
            data = bytes(source)
            label = "image bytes"
            if not data:
                raise _fail(record_id, "image bytes are empty (0 bytes)")
            fh: Any = io.BytesIO(data)
        elif isinstance(source, (str, Path)):
            path = Path(source)
            label = str(path)
            if not path.is_file():
                raise _fail(record_id, f"image file {path} does not exist", DataFileError)
            if path.stat().st_size == 0:
                raise _fail(record_id, f"image file {path} is empty (0 bytes)")
            fh = path
        else:
            raise _fail(record_id, f"cannot load an image from a {type(source).__name__}; expected a path or bytes")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                img = Image.open(fh)
                width, height = img.size
                if width * height > max_pixels:
                    raise _fail(record_id, f"{label} is {width}x{height} = {width * height:,} pixels, over the "
                                f"limit of {max_pixels:,}; refused without decoding (possible decompression bomb)")
                img.load()
        except DataError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise _fail(record_id, f"{label} refused as a possible decompression bomb ({exc})") from None
        except UnidentifiedImageError:
            raise _fail(record_id, f"{label} is not an image PIL can read (wrong extension or not an image file)") from None
        except (OSError, SyntaxError, ValueError) as exc:
            raise _fail(record_id, f"{label} cannot be decoded, it may be truncated or corrupt ({exc})") from None
    return _to_rgb(img, record_id)


def _from_array(arr: np.ndarray, record_id: Any) -> Image.Image:
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (1, 3, 4)):
        raise _fail(record_id, f"image array has shape {arr.shape}; expected (H, W), (H, W, 3) or (H, W, 4)")
    if arr.dtype == np.uint16:
        arr = (arr.astype(np.float32) / 257.0).round().astype(np.uint8)
    elif np.issubdtype(arr.dtype, np.floating):
        arr = (np.clip(arr, 0.0, 1.0) * 255).round().astype(np.uint8)
    elif arr.dtype != np.uint8:
        raise _fail(record_id, f"image array has dtype {arr.dtype}; expected uint8, uint16 or float in [0, 1]")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    return Image.fromarray(arr)


def _to_rgb(img: Image.Image, record_id: Any) -> Image.Image:
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # noqa: BLE001 - a broken EXIF block must not make a readable image unusable
        pass
    if min(img.size) < MIN_SIDE:
        raise _fail(record_id, f"image is {img.size[0]}x{img.size[1]} pixels; need at least {MIN_SIDE} on each side")
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        img = Image.fromarray((np.clip(arr / top, 0, 1) * 255).round().astype(np.uint8))
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    if img.mode != "RGB":
        img = img.convert("RGB")
    return img


# --- transforms -----------------------------------------------------------------------------------------------


def _to_tensor(img: Image.Image) -> torch.Tensor:
    """8-bit RGB PIL image -> (3, H, W) float32 in [0, 1] (torchvision's ``ToTensor``: each value / 255)."""
    arr = np.asarray(img, dtype=np.float32) / 255.0
    return torch.from_numpy(arr.transpose(2, 0, 1).copy())


@dataclass(frozen=True)
class ImageTransform:
    """PIL RGB image -> (3, size, size) float32 tensor.

    Args:
        size: output side (CLIBD: 224).
        resize: eval-time short-side resize before the centre crop (CLIBD: 256).
        normalize: ``"none"`` (pixels in 0..1, CLIBD's ViT), ``"imagenet"`` (mean/std), or ``"half"`` ((x-0.5)/0.5).
        train: random resized crop (scale 0.08-1, ratio 3/4-4/3), h/v flips and rotation in +-45 degrees.
        resample: eval resize of the 8-bit image with PIL (``"pil"``) or of the float tensor (``"tensor"``, released
            CLIBD models; see the module docstring).
    """

    size: int = 224
    resize: int = 256
    normalize: Literal["none", "imagenet", "half"] = "none"
    train: bool = False
    resample: Literal["pil", "tensor"] = "pil"

    def __call__(self, img: Image.Image, rng: np.random.Generator | None = None) -> torch.Tensor:
        if self.train:
            rng = rng if rng is not None else np.random.default_rng()
            img = self._random_resized_crop(img, rng)
            if rng.random() < 0.5:
                img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            if rng.random() < 0.5:
                img = img.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
            angle = float(rng.uniform(-45.0, 45.0))
            img = img.rotate(angle, resample=Image.Resampling.BILINEAR, fillcolor=(0, 0, 0))
        elif self.resample == "tensor":
            return self._normalise(self._tensor_resize_crop(_to_tensor(img)))
        else:
            img = self._resize_short(img, self.resize)
            img = self._center_crop(img, self.size)
        return self._normalise(_to_tensor(img))

    def _normalise(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.normalize == "imagenet":
            mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
            std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
            tensor = (tensor - mean) / std
        elif self.normalize == "half":
            tensor = (tensor - 0.5) / 0.5
        return tensor

    def _tensor_resize_crop(self, tensor: torch.Tensor) -> torch.Tensor:
        """torchvision's ``Resize(self.resize, antialias=True)`` then ``CenterCrop(self.size)`` on a float tensor."""
        _, h, w = tensor.shape
        short, long = (w, h) if w <= h else (h, w)
        new_short, new_long = self.resize, int(self.resize * long / short)
        new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
        if (new_h, new_w) != (h, w):
            tensor = torch.nn.functional.interpolate(tensor[None], size=(new_h, new_w), mode="bilinear",
                                                     align_corners=False, antialias=True)[0]
        top = int(round((new_h - self.size) / 2.0))
        left = int(round((new_w - self.size) / 2.0))
        return tensor[:, top: top + self.size, left: left + self.size].contiguous()

    @staticmethod
    def _resize_short(img: Image.Image, short: int) -> Image.Image:
        w, h = img.size
        scale = short / min(w, h)
        new = (max(1, round(w * scale)), max(1, round(h * scale)))
        return img.resize(new, Image.Resampling.BILINEAR, reducing_gap=None)

    @staticmethod
    def _center_crop(img: Image.Image, size: int) -> Image.Image:
        w, h = img.size
        left = int(round((w - size) / 2.0))
        top = int(round((h - size) / 2.0))
        return img.crop((left, top, left + size, top + size))

    def _random_resized_crop(self, img: Image.Image, rng: np.random.Generator) -> Image.Image:
        # torchvision RandomResizedCrop(scale=(0.08, 1), ratio=(3/4, 4/3)) semantics, 10 tries then centre crop
        w, h = img.size
        area = w * h
        for _ in range(10):
            target = area * rng.uniform(0.08, 1.0)
            ratio = float(np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3))))
            cw = int(round(np.sqrt(target * ratio)))
            ch = int(round(np.sqrt(target / ratio)))
            if 0 < cw <= w and 0 < ch <= h:
                left = int(rng.integers(0, w - cw + 1))
                top = int(rng.integers(0, h - ch + 1))
                return img.resize((self.size, self.size), Image.Resampling.BILINEAR, box=(left, top, left + cw, top + ch))
        side = min(w, h)
        left, top = (w - side) // 2, (h - side) // 2
        return img.resize((self.size, self.size), Image.Resampling.BILINEAR, box=(left, top, left + side, top + side))
