"""Turn an image column into pixels: encoded PNG/JPEG (the Hugging Face layout) or plain numbers.

The same code decodes for the preflight checks, for the Ray Data stage and for
evaluation, so a file that passes the checks decodes the same way in training.
"""

from __future__ import annotations

import hashlib
import io
import warnings

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from PIL import Image, UnidentifiedImageError


class RowError(ValueError):
    """A problem with one row; the caller adds the file and split."""

    def __init__(self, row: int, message: str):
        super().__init__(message)
        self.row = row
        self.message = message


# Pixels are 0..255 (what the models' Rescaling(1/255) expects); 8-bit images are exactly that.
PIXEL_RANGE = (0.0, 255.0)
# Palette images are expanded to what the spec's channel count asks for; 16-bit images are refused
# (scaling them to 8 bits would be a guess about their range that the user should make).
PALETTE_MODES = {1: "L", 3: "RGB"}
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


def _encoded_bytes(column: pa.Array) -> list | None:
    """The encoded image bytes of each row, or None when the column holds plain numbers."""
    if pa.types.is_struct(column.type):
        if column.type.get_field_index("bytes") < 0:
            raise RowError(0, f"the image column is a struct without a 'bytes' field ({column.type}); "
                              "expected the Hugging Face image layout struct{bytes, path}")
        return column.field("bytes").to_pylist()
    if pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type):
        return column.to_pylist()
    return None


def _decode_one(data: bytes | None, row: int, shape: tuple[int, int, int]) -> np.ndarray:
    """One image's pixels; its size is read from the header and checked before anything is decoded."""
    if data is None:
        raise RowError(row, "image is null")
    height, width, channels = shape
    try:
        with warnings.catch_warnings():
            # Pillow warns of a large image at open; the size check below refuses it in one clean line.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
        with image:
            if image.size != (width, height):
                raise RowError(row, f"image is {image.size[1]} x {image.size[0]} pixels, expected {height} x "
                                    f"{width} (data.image_shape); nothing of it was decoded")
            if image.mode in SIXTEEN_BIT_MODES:
                raise RowError(row, f"image is {image.mode} (more than 8 bits per pixel); convert the data to 8-bit "
                                    "0..255 pixels, the range the models take")
            if image.mode == "P":
                image = image.convert(PALETTE_MODES.get(channels, "RGB"))  # the palette's colours, as pixels
            pixels = np.asarray(image)
    except RowError:
        raise
    except Image.DecompressionBombError as error:
        raise RowError(row, f"image refused as a decompression bomb ({error})") from None
    except (UnidentifiedImageError, OSError, ValueError) as error:
        raise RowError(row, f"image bytes do not decode ({error})") from None
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if pixels.shape != shape:
        raise RowError(row, f"image is {list(pixels.shape)}, expected {list(shape)} (data.image_shape)")
    return pixels


def _numeric(column: pa.Array, shape: tuple[int, int, int]) -> np.ndarray:
    """List, fixed-size-list or tensor columns of numbers, one image per row."""
    size = int(np.prod(shape))
    if isinstance(column.type, pa.ExtensionType):  # e.g. Ray Data's tensor columns
        array = np.asarray(column.to_numpy(zero_copy_only=False))
        if array.dtype == object or array[0].size != size:
            raise RowError(0, f"image tensors are {list(array.shape[1:])}, expected {list(shape)} (data.image_shape)")
        return _in_range(array.reshape((len(array), *shape)))
    if not (pa.types.is_list(column.type) or pa.types.is_large_list(column.type)
            or pa.types.is_fixed_size_list(column.type)):
        raise RowError(0, f"image column has type {column.type}; expected encoded image bytes "
                          "(struct{bytes} or binary) or a list of numbers per row")
    if not (pa.types.is_integer(column.type.value_type) or pa.types.is_floating(column.type.value_type)):
        raise RowError(0, f"image values have type {column.type.value_type}, expected numbers")
    lengths = pc.fill_null(pc.list_value_length(column), -1).to_numpy()
    wrong = np.flatnonzero(lengths != size)
    if wrong.size:
        row = int(wrong[0])
        found = "a null image" if lengths[row] < 0 else f"{lengths[row]} values"
        raise RowError(row, f"image has {found}, expected {size} = {' x '.join(map(str, shape))} (data.image_shape)")
    return _in_range(column.flatten().to_numpy(zero_copy_only=False).reshape((len(column), *shape)))


def _in_range(pixels: np.ndarray) -> np.ndarray:
    """Numeric pixels, after checking every value is finite and within 0..255 (RowError names the first row)."""
    low, high = PIXEL_RANGE
    flat = pixels.reshape(len(pixels), -1)
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(flat) if flat.dtype.kind == "f" else np.zeros(flat.shape, bool)
        bad |= (flat < low) | (flat > high)
    rows = np.flatnonzero(bad.any(axis=1))
    if rows.size:
        row = int(rows[0])
        value = flat[row][bad[row]][0].item()
        raise RowError(row, f"pixel value {value!r} is not a finite number within {low:g}..{high:g} "
                            f"({int(bad.sum())} such value(s) in {rows.size} row(s))")
    return pixels


def decode_column(column: pa.Array | pa.ChunkedArray, shape: tuple[int, int, int]) -> np.ndarray:
    """Pixels of every row, shape (N, H, W, C); uint8 for encoded images, the column's dtype otherwise."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    encoded = _encoded_bytes(column)
    if encoded is None:
        return _numeric(column, shape)
    pixels = [_decode_one(data, row, shape) for row, data in enumerate(encoded)]
    return np.stack(pixels) if pixels else np.zeros((0, *shape), np.uint8)


def row_keys(pixels: np.ndarray) -> np.ndarray:
    """A stable 64-bit key per row from its pixels.

    Splits and augmentation randomness are functions of this key, so they do
    not depend on how Ray Data batches, orders or places the rows.
    """
    return np.array([int.from_bytes(hashlib.blake2b(np.ascontiguousarray(image).tobytes(),
                                                    digest_size=8).digest(), "little")
                     for image in pixels], dtype=np.uint64)
