"""A torch ``Dataset`` that decodes, crops, masks and transforms in workers.

Each item is one image; in patch mode it yields all of that image's object
crops, so an image is decoded once however many objects it holds. Nothing
here imports fiftyone.
"""

import os

import torch

from .images import ImageDecodeError, PatchError, extract_patch, load_rgb


class PatchSpec:
    """One object to crop: a relative box plus an optional mask (an array, or the path of a
    mask image on disk, ``Detection.mask_path``) or polygons."""

    __slots__ = ("bbox", "mask", "polygons")

    def __init__(self, bbox, mask=None, polygons=None):
        self.bbox = bbox
        self.mask = mask
        self.polygons = polygons


class ImageItems(torch.utils.data.Dataset):
    """Decoded, transformed images (or their object crops).

    ``__getitem__(i)`` returns ``(i, tensor, errors)`` where ``tensor`` has
    shape ``(m, 3, H, W)`` (``m = 1`` for a whole image, the number of valid
    crops in patch mode) or is None when nothing could be made, and
    ``errors`` lists, per requested item, None or the reason it failed.

    Args:
        filepaths: image paths
        transform: RGB PIL image -> ``(3, H, W)`` tensor
        patches (None): per image, a list of :class:`PatchSpec` (patch mode)
        padding (0.0): context around each box (fraction of its size)
        min_size (2): minimum crop size in pixels
    """

    def __init__(self, filepaths, transform, patches=None, padding=0.0, min_size=2):
        self.filepaths = list(filepaths)
        self.transform = transform
        self.patches = patches
        self.padding = padding
        self.min_size = min_size

    def __len__(self):
        return len(self.filepaths)

    def __getitem__(self, i):
        n_wanted = 1 if self.patches is None else len(self.patches[i])
        try:
            img = load_rgb(self.filepaths[i])
        except ImageDecodeError as e:
            return i, None, [str(e)] * n_wanted
        if self.patches is None:
            try:
                return i, self.transform(img).unsqueeze(0), [None]
            except Exception as e:  # transform failure: report, don't crash
                return i, None, ["transform failed: %s" % e]
        tensors, errors = [], []
        for spec in self.patches[i]:
            try:
                mask = spec.mask
                if isinstance(mask, str):
                    mask = read_mask(mask)
                crop = extract_patch(
                    img, spec.bbox, padding=self.padding, min_size=self.min_size,
                    mask=mask, polygons=spec.polygons,
                )
                tensors.append(self.transform(crop))
                errors.append(None)
            except (PatchError, ValueError) as e:
                errors.append(str(e))
        check_same_size([t.unsqueeze(0) for t in tensors])  # one image's crops, batched together
        return i, (torch.stack(tensors) if tensors else None), errors


def collate_items(batch):
    """Keeps items as a list (crops per image vary); see :class:`ImageItems`."""
    return batch


def default_num_workers():
    """One fewer than the CPU count (the main process runs the model), 1..8."""
    return max(1, min(8, (os.cpu_count() or 2) - 1))


def batches_by_count(counts, batch_size):
    """Groups item indices so each group holds about ``batch_size`` crops.

    Args:
        counts: number of crops per item
        batch_size: target crops per group (an item is never split)

    Returns:
        a list of index lists covering every item with ``counts > 0``
    """
    groups, current, size = [], [], 0
    for i, c in enumerate(counts):
        if c <= 0:
            continue
        if current and size + c > batch_size:
            groups.append(current)
            current, size = [], 0
        current.append(i)
        size += c
    if current:
        groups.append(current)
    return groups


def make_loader(items, batch_size, num_workers=None, counts=None, pin_memory=False):
    """A DataLoader over :class:`ImageItems` batched by images or by crops."""
    num_workers = default_num_workers() if num_workers is None else int(num_workers)
    kwargs = dict(
        num_workers=num_workers,
        collate_fn=collate_items,
        pin_memory=pin_memory,
    )
    if num_workers > 0:
        kwargs["prefetch_factor"] = 2
        kwargs["persistent_workers"] = False
    if counts is None:
        return torch.utils.data.DataLoader(items, batch_size=batch_size, shuffle=False, **kwargs)
    return torch.utils.data.DataLoader(
        items, batch_sampler=batches_by_count(counts, batch_size), **kwargs
    )


def read_mask(path):
    """A mask image from disk (``Detection.mask_path``) as a 2D array, nonzero = object.

    Raises:
        ValueError: the file cannot be read (reported for that object, not raised)
    """
    import numpy as np
    from PIL import Image

    try:
        with Image.open(path) as m:
            arr = np.asarray(m)
    except (OSError, ValueError) as e:
        raise ValueError("could not read mask_path %r: %s" % (path, e)) from None
    return arr if arr.ndim == 2 else arr[..., 0]


def check_same_size(tensors):
    """Raises a clear error when the transform gave images or crops different sizes (they are
    batched together: the transform must end in a fixed size)."""
    shapes = sorted({tuple(t.shape[1:]) for t in tensors})
    if len(shapes) > 1:
        raise ValueError(
            "The transform gives images of different sizes (%s): the images are batched, so it "
            "must produce one size, e.g. end with transforms.Resize((224, 224)) or "
            "transforms.CenterCrop(224). Nothing was written" % ", ".join(map(str, shapes[:3])))
