"""A detected map made the size of the image being rendered, as sd-webui-controlnet sizes it (`detectmap_proc`).

The map, not the input image, is resized: the preprocessor first works at its processor resolution, then the map
is fitted to the job's size in one of the three resize modes. The extension's own rules apply, not A1111's img2img
resize: "Resize and Fill" pads with the median colour of the map's border, and the interpolation depends on the
map's colours (nearest for segment-like maps, area when shrinking, cubic when growing), with binary edge maps
re-binarised (Otsu) and one-pixel edges thinned back to one pixel. /work/plan/notes-i23.md has the source lines.
"""

from __future__ import annotations

import numpy as np

JUST_RESIZE = "Just Resize"
CROP_AND_RESIZE = "Crop and Resize"
RESIZE_AND_FILL = "Resize and Fill"
RESIZE_MODES = (JUST_RESIZE, CROP_AND_RESIZE, RESIZE_AND_FILL)


def latent_aligned(side: int) -> int:
    """A pixel side rounded down to the latent grid (the extension's `align_dim_latent`)."""
    return side // 8 * 8


def pixel_perfect_resolution(height: int, width: int, target_h: int, target_w: int, resize_mode: str) -> int:
    """The processor resolution that makes the map exactly the job's size ("Pixel Perfect")."""
    k0, k1 = target_h / height, target_w / width
    k = min(k0, k1) if resize_mode == RESIZE_AND_FILL else max(k0, k1)
    return int(np.round(k * min(height, width)))


def fit_map(detected: np.ndarray, resize_mode: str, height: int, width: int) -> np.ndarray:
    """`detected` (uint8, H x W x 3) fitted to height x width in `resize_mode`."""
    if resize_mode == JUST_RESIZE:
        return _high_quality_resize(detected, width, height)
    old_h, old_w = detected.shape[:2]
    k0, k1 = height / old_h, width / old_w
    if resize_mode == RESIZE_AND_FILL:
        k = min(k0, k1)
        borders = np.concatenate([detected[0, :, :], detected[-1, :, :], detected[:, 0, :], detected[:, -1, :]])
        background = np.tile(np.median(borders, axis=0).astype(detected.dtype)[None, None], [height, width, 1])
        resized = _high_quality_resize(detected, int(np.round(old_w * k)), int(np.round(old_h * k)))
        new_h, new_w = resized.shape[:2]
        top, left = max(0, (height - new_h) // 2), max(0, (width - new_w) // 2)
        background[top : top + new_h, left : left + new_w] = resized
        return background
    if resize_mode != CROP_AND_RESIZE:
        raise ValueError(f"unknown resize mode {resize_mode!r}")
    k = max(k0, k1)
    resized = _high_quality_resize(detected, int(np.round(old_w * k)), int(np.round(old_h * k)))
    new_h, new_w = resized.shape[:2]
    top, left = max(0, (new_h - height) // 2), max(0, (new_w - width) // 2)
    return np.ascontiguousarray(resized[top : top + height, left : left + width])


def _unique_colours(image: np.ndarray) -> int:
    """How many distinct RGB colours the map has (each packed into one integer: a 1-D unique is fast)."""
    pixels = image.reshape(-1, image.shape[2]).astype(np.uint32)
    packed = pixels[:, 0] << 16 | pixels[:, 1] << 8 | pixels[:, 2]
    return len(np.unique(packed))


def _high_quality_resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """The extension's map resize: interpolation chosen by the map's colours; binary maps stay binary."""
    import cv2

    if image.shape[0] == height and image.shape[1] == width:
        return image
    old_area, new_area = image.shape[0] * image.shape[1], width * height
    colours = _unique_colours(image)
    binary = colours == 2 and int(image.min()) < 16 and int(image.max()) > 240
    one_pixel_edge = False
    if binary:
        kernel = np.ones((3, 3), dtype=np.uint8)
        opened = cv2.dilate(cv2.erode(image, kernel, iterations=1), kernel, iterations=1)
        one_pixel_edge = bool(np.count_nonzero(opened < image) * 2 > np.count_nonzero(image > 127))
    if 2 < colours < 200:
        interpolation = cv2.INTER_NEAREST
    elif new_area < old_area:
        interpolation = cv2.INTER_AREA
    else:
        interpolation = cv2.INTER_CUBIC
    resized = cv2.resize(image, (width, height), interpolation=interpolation)
    if not binary:
        return resized
    grey = np.mean(resized.astype(np.float32), axis=2).clip(0, 255).astype(np.uint8)
    if one_pixel_edge:
        grey = _non_max_suppression(grey)
        _, grey = cv2.threshold(grey, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        grey = thin_edges(grey, prune=new_area > old_area)
    else:
        _, grey = cv2.threshold(grey, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    return np.stack([grey] * 3, axis=2)


# Line directions (horizontal, vertical, both diagonals) for the non-maximum suppression of edge maps.
_NMS_LINES = [
    np.array([[0, 0, 0], [1, 1, 1], [0, 0, 0]], dtype=np.uint8),
    np.array([[0, 1, 0], [0, 1, 0], [0, 1, 0]], dtype=np.uint8),
    np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=np.uint8),
    np.array([[0, 0, 1], [0, 1, 0], [1, 0, 0]], dtype=np.uint8),
]


def _non_max_suppression(grey: np.ndarray) -> np.ndarray:
    """Keep a pixel where it is the maximum of its 3-pixel line in any of the four directions."""
    import cv2

    kept = np.zeros_like(grey)
    for line in _NMS_LINES:
        np.putmask(kept, cv2.dilate(grey, kernel=line) == grey, grey)
    return kept


def _rotations(kernels: list[np.ndarray]) -> list[np.ndarray]:
    return [np.rot90(kernel, k=turns) for turns in range(4) for kernel in kernels]


# Hit-or-miss patterns (1 = set, -1 = clear, 0 = either) of Lvmin Zhang's edge thinning, in its four rotations.
_THIN = _rotations(
    [
        np.array([[-1, -1, -1], [0, 1, 0], [1, 1, 1]], dtype=np.int32),
        np.array([[0, -1, -1], [1, 1, -1], [0, 1, 0]], dtype=np.int32),
    ]
)
_PRUNE = _rotations(
    [
        np.array([[-1, -1, -1], [-1, 1, -1], [0, 0, -1]], dtype=np.int32),
        np.array([[-1, -1, -1], [-1, 1, -1], [-1, 0, 0]], dtype=np.int32),
    ]
)


def _clear_matches(image: np.ndarray, patterns: list[np.ndarray]) -> bool:
    """Clear every pixel where a pattern matches, pattern after pattern; True if any pixel was cleared."""
    import cv2

    changed = False
    for pattern in patterns:
        hits = cv2.morphologyEx(image, cv2.MORPH_HITMISS, pattern) > 127
        if hits.any():
            image[hits] = 0
            changed = True
    return changed


def thin_edges(binary: np.ndarray, prune: bool) -> np.ndarray:
    """Thin a binary edge map to one-pixel lines (at most 32 passes), then optionally prune one-pixel spurs."""
    out = binary.copy()
    for _ in range(32):
        if not _clear_matches(out, _THIN):
            break
    if prune:
        _clear_matches(out, _PRUNE)
    return out


def map_to_tensor(detected: np.ndarray):
    """A fitted map as the ControlNet's input: float in [0, 1], shape [1, 3, H, W], RGB."""
    import torch

    return torch.from_numpy(np.array(detected, copy=True)).float().div(255.0).permute(2, 0, 1).unsqueeze(0)
