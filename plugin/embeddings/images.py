"""Image decoding, colour conversion, object crops and instance masks.

Plain numpy + PIL (no torch, no fiftyone) so it runs in data-loader workers
and can be tested directly. Boxes follow FiftyOne's convention: relative
``[top-left-x, top-left-y, width, height]`` in ``[0, 1]``.
"""

import math

import numpy as np


class ImageDecodeError(RuntimeError):
    """An image could not be read or decoded."""


class PatchError(ValueError):
    """An object crop could not be made (box outside the image, too small...)."""


def load_rgb(path, max_size=None):
    """Decodes an image file as an 8-bit RGB ``PIL.Image``.

    Conversions: grayscale and palette images are expanded to RGB; alpha is
    dropped (RGBA, LA); 16-bit and 32-bit integer images are rescaled by their
    bit depth (``I;16``: value / 257); float images are min-max scaled; CMYK
    and YCbCr are converted by PIL.

    Args:
        path: the image file
        max_size (None): if given, JPEGs are decoded at reduced resolution
            (PIL draft mode) when they are much larger than this size

    Raises:
        ImageDecodeError: naming the file and the cause
    """
    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(path)
        if max_size and img.format == "JPEG":
            img.draft("RGB", (max_size, max_size))
        img.load()
    except FileNotFoundError as e:
        raise ImageDecodeError("image file not found: %s" % path) from e
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ImageDecodeError("cannot decode image %s: %s" % (path, e)) from e
    return to_rgb(img)


def to_rgb(img):
    """Converts a ``PIL.Image`` of any mode to 8-bit RGB (see :func:`load_rgb`)."""
    from PIL import Image

    mode = img.mode
    if mode == "RGB":
        return img
    if mode.startswith("I;16") or mode == "I":
        arr = np.asarray(img)
        if mode == "I":
            # 32-bit container; PNG 16-bit is often decoded as "I"
            top = 65535.0 if arr.max(initial=0) > 255 else 255.0
        else:
            top = 65535.0
        arr = np.clip(arr.astype(np.float32) * (255.0 / top), 0, 255)
        return Image.fromarray(arr.round().astype(np.uint8), "L").convert("RGB")
    if mode == "F":
        arr = np.asarray(img, dtype=np.float32)
        finite = np.isfinite(arr)
        lo = float(arr[finite].min()) if finite.any() else 0.0
        hi = float(arr[finite].max()) if finite.any() else 1.0
        arr = np.where(finite, (arr - lo) / max(hi - lo, 1e-12), 0.0) * 255.0
        return Image.fromarray(arr.round().astype(np.uint8), "L").convert("RGB")
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        background = Image.new("RGB", img.size, (0, 0, 0))
        background.paste(img, mask=img.getchannel("A"))
        return background
    return img.convert("RGB")


def box_to_pixels(bbox, width, height, padding=0.0):
    """Converts a relative box to integer pixel bounds, padded and clipped.

    Args:
        bbox: ``[x, y, w, h]`` relative to the image size
        width, height: the image size in pixels
        padding (0.0): grow the box by this fraction of its width/height on
            each side (context around the object)

    Returns:
        ``(x0, y0, x1, y1)`` pixel bounds (exclusive ends), clipped to the image

    Raises:
        PatchError: for a malformed, non-finite, empty or fully outside box
    """
    try:
        x, y, w, h = (float(v) for v in bbox)
    except (TypeError, ValueError) as e:
        raise PatchError("malformed bounding box %r" % (bbox,)) from e
    if not all(math.isfinite(v) for v in (x, y, w, h)):
        raise PatchError("bounding box has NaN/inf coordinates: %r" % (bbox,))
    if w <= 0 or h <= 0:
        raise PatchError("bounding box has zero or negative area: %r" % (bbox,))
    x -= padding * w
    y -= padding * h
    w *= 1 + 2 * padding
    h *= 1 + 2 * padding
    x0 = int(math.floor(max(0.0, x) * width))
    y0 = int(math.floor(max(0.0, y) * height))
    x1 = int(math.ceil(min(1.0, x + w) * width))
    y1 = int(math.ceil(min(1.0, y + h) * height))
    if x1 <= x0 or y1 <= y0:
        raise PatchError("bounding box lies outside the image: %r" % (bbox,))
    return x0, y0, x1, y1


def _mask_canvas(crop_size, box_px, crop_origin, mask):
    """Pastes a box-relative mask into a crop-sized boolean canvas."""
    from PIL import Image

    cw, ch = crop_size
    bx0, by0, bx1, by1 = box_px
    ox, oy = crop_origin
    bw, bh = max(1, bx1 - bx0), max(1, by1 - by0)
    m = np.asarray(mask)
    if m.ndim == 3:
        m = m[..., 0]
    m = Image.fromarray((m > 0).astype(np.uint8) * 255).resize((bw, bh), Image.NEAREST)
    m = np.asarray(m) > 0
    canvas = np.zeros((ch, cw), dtype=bool)
    # place [bx0, bx1) x [by0, by1) (unclipped box) into crop coordinates
    sx0, sy0 = bx0 - ox, by0 - oy
    dx0, dy0 = max(0, sx0), max(0, sy0)
    dx1, dy1 = min(cw, sx0 + bw), min(ch, sy0 + bh)
    if dx1 > dx0 and dy1 > dy0:
        canvas[dy0:dy1, dx0:dx1] = m[dy0 - sy0 : dy1 - sy0, dx0 - sx0 : dx1 - sx0]
    return canvas


def _polygon_canvas(crop_size, crop_origin, polygons, width, height):
    from PIL import Image, ImageDraw

    cw, ch = crop_size
    ox, oy = crop_origin
    canvas = Image.new("L", (cw, ch), 0)
    draw = ImageDraw.Draw(canvas)
    for poly in polygons:
        pts = [(float(px) * width - ox, float(py) * height - oy) for px, py in poly]
        if len(pts) >= 3:
            draw.polygon(pts, fill=255)
    return np.asarray(canvas) > 0


def extract_patch(img, bbox, padding=0.0, min_size=2, mask=None, polygons=None):
    """Crops one object from an RGB image, optionally masking its background.

    Args:
        img: an RGB ``PIL.Image``
        bbox: relative ``[x, y, w, h]``
        padding (0.0): context around the box, as a fraction of its size
        min_size (2): minimum crop width and height in pixels after clipping
        mask (None): an instance mask covering ``bbox`` (FiftyOne's
            ``Detection.mask``: 2D, any resolution, nonzero = object)
        polygons (None): a list of polygons, each a list of relative
            ``(x, y)`` points (FiftyOne ``Polyline.points``); used as the mask

    Returns:
        an RGB ``PIL.Image`` crop; pixels outside the mask/polygons are black

    Raises:
        PatchError: if the box is malformed, outside the image, or the crop is
            smaller than ``min_size``
    """
    from PIL import Image

    width, height = img.size
    x0, y0, x1, y1 = box_to_pixels(bbox, width, height, padding)
    if (x1 - x0) < min_size or (y1 - y0) < min_size:
        raise PatchError(
            "crop of %dx%d px is smaller than min_size=%d" % (x1 - x0, y1 - y0, min_size)
        )
    crop = img.crop((x0, y0, x1, y1))
    if mask is None and not polygons:
        return crop
    if mask is not None:
        # unclipped box origin so that the mask aligns with the true box
        bx, by = float(bbox[0]) * width, float(bbox[1]) * height
        bw, bh = float(bbox[2]) * width, float(bbox[3]) * height
        box_px = (int(round(bx)), int(round(by)),
                  int(round(bx + bw)), int(round(by + bh)))
        keep = _mask_canvas(crop.size, box_px, (x0, y0), mask)
    else:
        keep = _polygon_canvas(crop.size, (x0, y0), polygons, width, height)
    arr = np.asarray(crop).copy()
    arr[~keep] = 0
    return Image.fromarray(arr, "RGB")


def polygons_bbox(polygons):
    """The relative ``[x, y, w, h]`` box enclosing polygons of relative points."""
    pts = np.array([p for poly in polygons for p in poly], dtype=np.float64)
    if pts.size == 0:
        raise PatchError("polyline has no points")
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    return [lo[0], lo[1], hi[0] - lo[0], hi[1] - lo[1]]
