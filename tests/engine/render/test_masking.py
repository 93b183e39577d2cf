"""Inpainting masks as A1111 makes them: binary masks, the blur, overlay masks, "Only masked" geometry, fill, the
latent mask, the composite that keeps the original outside the blurred mask, and the settings' words and infotext."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from engine.errors import EngineError
from engine.render.masking import (
    INPAINT_AREAS,
    MASK_MODES,
    MASKED_CONTENTS,
    MaskSettings,
    binary_mask,
    blur,
    blur_kernel_size,
    choose,
    composite,
    crop_region,
    doubled,
    expand_to_aspect,
    fill,
    invert,
    latent_mask,
    options_from_infotext,
    overlay,
    prepare,
)


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image)


def rect_mask(size: tuple[int, int], box: tuple[int, int, int, int]) -> Image.Image:
    mask = Image.new("L", size, 0)
    mask.paste(255, box)
    return mask


def noise_image(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB")


# --- the binary mask --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("grey", "expected"), [(0, 0), (100, 0), (128, 0), (129, 255), (200, 255), (255, 255)])
def test_luminance_above_128_is_change(grey, expected):
    assert set(pixels(binary_mask(Image.new("L", (4, 4), grey))).flat) == {expected}


def test_rgb_uses_luminance():
    mask = Image.new("RGB", (2, 1))
    mask.putpixel((0, 0), (255, 255, 255))
    mask.putpixel((1, 0), (255, 0, 0))  # L = 0.299 * 255 = 76: keep
    assert pixels(binary_mask(mask)).tolist() == [[255, 0]]


def test_alpha_wins_when_the_mask_has_transparency():
    """Opaque = change, transparent = keep, whatever the colour (A1111's painted mask)."""
    mask = Image.new("RGBA", (3, 1), (0, 0, 0, 0))
    mask.putpixel((0, 0), (0, 0, 0, 255))  # black but opaque: change
    mask.putpixel((1, 0), (255, 255, 255, 128))  # white, half transparent: keep (128 is not > 128)
    mask.putpixel((2, 0), (255, 255, 255, 129))
    assert pixels(binary_mask(mask)).tolist() == [[255, 0, 255]]


def test_fully_opaque_alpha_falls_back_to_luminance():
    mask = Image.new("RGBA", (2, 1), (0, 0, 0, 255))
    mask.putpixel((1, 0), (255, 255, 255, 255))
    assert pixels(binary_mask(mask)).tolist() == [[0, 255]]


def test_palette_transparency_and_la_are_alpha():
    palette = Image.new("P", (2, 1), 0)
    palette.putpalette([0, 0, 0, 255, 255, 255])
    palette.putpixel((1, 0), 1)
    palette.info["transparency"] = 1  # white is transparent: keep
    assert pixels(binary_mask(palette)).tolist() == [[255, 0]]
    la = Image.new("LA", (2, 1), (255, 0))
    la.putpixel((0, 0), (0, 255))
    assert pixels(binary_mask(la)).tolist() == [[255, 0]]


def test_sixteen_bit_grey_is_read_on_its_full_scale():
    grey = Image.fromarray(np.array([[0, 128 * 256, 129 * 256, 65535]], dtype=np.uint16))
    assert pixels(binary_mask(grey)).tolist() == [[0, 0, 255, 255]]


def test_a_mask_of_another_size_is_stretched_to_the_image_and_stays_binary():
    mask = rect_mask((100, 50), (50, 0, 100, 50))  # right half
    resized = binary_mask(mask, (64, 64))
    assert resized.size == (64, 64)
    assert set(pixels(resized).flat) == {0, 255}
    assert pixels(resized)[:, :30].max() == 0 and pixels(resized)[:, 34:].min() == 255


@given(st.integers(1, 40), st.integers(1, 40), st.sampled_from(["L", "RGB", "RGBA", "LA", "1", "I;16"]), st.data())
def test_binary_mask_is_always_0_or_255(width, height, mode, data):
    seed = data.draw(st.integers(0, 2**16))
    channels = {"L": 1, "1": 1, "I;16": 1, "RGB": 3, "RGBA": 4, "LA": 2}[mode]
    rng = np.random.default_rng(seed)
    array = rng.integers(0, 256, (height, width, channels), dtype=np.uint8)
    if mode in ("L", "1", "I;16"):
        image = Image.fromarray(array[..., 0], "L").convert(mode)
    else:
        image = Image.fromarray(array, mode)
    mask = binary_mask(image, data.draw(st.none() | st.tuples(st.integers(1, 30), st.integers(1, 30))))
    assert mask.mode == "L" and set(pixels(mask).flat) <= {0, 255}


def test_invert_swaps_keep_and_change():
    assert pixels(invert(rect_mask((4, 1), (0, 0, 1, 1)))).tolist() == [[0, 255, 255, 255]]


# --- the blur ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("sigma", "size"), [(1, 7), (2, 11), (3, 17), (4, 21), (8, 41), (64, 321)])
def test_kernel_size_is_a1111s(sigma, size):
    assert blur_kernel_size(sigma) == size


def reference_blur(mask: np.ndarray, sigma: float) -> np.ndarray:
    """The same blur written independently: a sampled, normalised Gaussian of A1111's kernel size along x, then
    along y, with OpenCV's default border (reflect without repeating the edge)."""
    radius = blur_kernel_size(int(sigma)) // 2
    taps = np.exp(-((np.arange(-radius, radius + 1)) ** 2) / (2 * sigma**2))
    taps /= taps.sum()
    out = mask.astype(np.float64)
    for axis in (1, 0):
        pad = [(0, 0), (0, 0)]
        pad[axis] = (radius, radius)
        padded = np.pad(out, pad, mode="reflect")
        out = sum(taps[i] * np.take(padded, range(i, i + out.shape[axis]), axis=axis) for i in range(2 * radius + 1))
        out = np.round(out)  # each pass returns 8-bit pixels, as A1111's two OpenCV calls do
    return out


@pytest.mark.parametrize("sigma", [1, 4, 9])
def test_blur_is_a_separable_gaussian_of_a1111s_kernel(sigma):
    mask = rect_mask((80, 60), (20, 10, 50, 45))
    mask.paste(255, (70, 0, 80, 5))  # touches the border
    ours = pixels(blur(mask, sigma)).astype(np.int16)
    # OpenCV's 8-bit path keeps its taps in fixed point: a unit or two off the exact sum
    assert np.abs(ours - reference_blur(pixels(mask), sigma)).max() <= 2


def test_blur_treats_x_and_y_alike_and_zero_is_none():
    mask = rect_mask((40, 40), (5, 12, 30, 20))
    blurred = pixels(blur(mask, 3)).astype(int)
    transposed = pixels(blur(mask.transpose(Image.Transpose.TRANSPOSE), 3)).astype(int)
    assert np.abs(blurred - transposed.T).max() <= 1  # the passes' order only moves 8-bit rounding
    assert blur(mask, 0) is mask


def test_blur_spreads_a_rect_by_the_kernel_radius():
    blurred = blur(rect_mask((128, 128), (40, 50, 60, 80)), 4)
    assert blurred.getbbox() == (30, 40, 70, 90)  # radius 10 of the 21-tap kernel on every side


@pytest.mark.parametrize(("value", "expected"), [(0, 0), (1, 2), (100, 200), (127, 254), (128, 255), (200, 255)])
def test_whole_picture_overlay_mask_is_doubled_and_clipped(value, expected):
    assert pixels(doubled(Image.new("L", (1, 1), value))).item() == expected


# --- "Only masked" geometry ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("box", "padding", "expected"),
    [
        ((100, 200, 150, 260), 32, (68, 168, 182, 292)),
        ((100, 200, 150, 260), 0, (100, 200, 150, 260)),
        ((0, 0, 10, 10), 32, (0, 0, 42, 42)),  # clamped at the top-left
        ((500, 490, 512, 512), 32, (468, 458, 512, 512)),  # and at the bottom-right
    ],
)
def test_crop_region_is_the_bounding_box_plus_padding_inside_the_image(box, padding, expected):
    assert crop_region(rect_mask((512, 512), box), padding) == expected


def test_crop_region_of_an_empty_mask_is_none():
    assert crop_region(Image.new("L", (64, 64)), 32) is None


@pytest.mark.parametrize(
    ("box", "size", "image", "expected"),
    [
        ((68, 168, 182, 292), (512, 512), (512, 512), (63, 168, 187, 292)),  # widened about its centre
        ((100, 100, 228, 132), (512, 512), (512, 512), (100, 52, 228, 180)),  # A1111's 128x32 -> 128x128
        ((100, 490, 228, 512), (512, 512), (512, 512), (100, 384, 228, 512)),  # shifted up from the bottom
        ((10, 0, 30, 10), (512, 512), (512, 512), (10, 0, 30, 20)),  # shifted down from the top
        ((0, 0, 512, 100), (512, 512), (512, 256), (0, 0, 512, 256)),  # cannot fit: clipped to the image
        ((200, 200, 260, 260), (768, 512), (1024, 1024), (185, 200, 275, 260)),  # a 3:2 job
        ((200, 200, 260, 260), (512, 768), (1024, 1024), (200, 185, 260, 275)),  # a 2:3 job
    ],
)
def test_expand_to_aspect_follows_a1111s_integer_rules(box, size, image, expected):
    assert expand_to_aspect(box, size[0], size[1], image[0], image[1]) == expected


@given(
    st.integers(8, 300),
    st.integers(8, 300),
    st.sampled_from([(512, 512), (768, 512), (512, 768), (1024, 576), (64, 2048)]),
    st.data(),
)
def test_expanded_region_holds_the_box_stays_inside_and_has_the_jobs_aspect_when_it_fits(image_w, image_h, size, data):
    x1 = data.draw(st.integers(0, image_w - 1))
    y1 = data.draw(st.integers(0, image_h - 1))
    box = (x1, y1, data.draw(st.integers(x1 + 1, image_w)), data.draw(st.integers(y1 + 1, image_h)))
    ex1, ey1, ex2, ey2 = expand_to_aspect(box, size[0], size[1], image_w, image_h)
    assert 0 <= ex1 <= box[0] and box[2] <= ex2 <= image_w
    assert 0 <= ey1 <= box[1] and box[3] <= ey2 <= image_h
    ratio = size[0] / size[1]
    if (box[2] - box[0]) / (box[3] - box[1]) > ratio:
        desired = (box[2] - box[0]) / ratio
        assert ex1 == box[0] and ex2 == box[2]
        if desired <= image_h:
            assert desired - 1 < ey2 - ey1 <= desired
    else:
        desired = (box[3] - box[1]) * ratio
        assert ey1 == box[1] and ey2 == box[3]
        if desired <= image_w:
            assert desired - 1 < ex2 - ex1 <= desired


# --- pixels ------------------------------------------------------------------------------------------------------


def test_fill_keeps_unmasked_pixels_and_paints_from_the_surroundings():
    image = Image.new("RGB", (96, 64), (220, 20, 20))
    image.paste((20, 20, 220), (48, 0, 96, 64))  # left red, right blue
    mask = rect_mask((96, 64), (40, 0, 56, 64))  # a strip over the seam
    filled = pixels(fill(image, mask)).astype(int)
    original = pixels(image).astype(int)
    keep = pixels(mask) == 0
    assert (filled[keep] == original[keep]).all()
    assert filled[32, 41, 0] > filled[32, 41, 2]  # near the red side: reddish
    assert filled[32, 54, 2] > filled[32, 54, 0]  # near the blue side: bluish
    assert (filled[:, 40:56] != 0).any(axis=2).all()  # nothing left black


def test_fill_of_a_plain_image_is_the_same_colour():
    image = Image.new("RGB", (64, 64), (90, 140, 200))
    filled = pixels(fill(image, rect_mask((64, 64), (10, 10, 50, 50)))).astype(int)
    assert np.abs(filled - np.array([90, 140, 200])).max() <= 8  # premultiplied alpha rounds faint layers


def test_overlay_is_opaque_where_the_mask_keeps_and_clear_where_it_changes():
    image = noise_image(8, 1)
    mask = Image.fromarray(np.array([[0, 0, 64, 128, 192, 255, 255, 0]], dtype=np.uint8), "L")
    layer = pixels(overlay(image, mask))
    assert layer[0, :, 3].tolist() == [255, 255, 191, 127, 63, 0, 0, 255]
    assert (layer[0, [0, 1, 7], :3] == pixels(image)[0, [0, 1, 7]]).all()


def test_composite_keeps_the_original_outside_the_mask_exactly_and_the_result_inside():
    original, result = noise_image(32, 32, 1), noise_image(32, 32, 2)
    mask = blur(rect_mask((32, 32), (8, 8, 26, 26)), 2)
    out = pixels(composite(result, overlay(original, mask), None))
    keep, change = pixels(mask) == 0, pixels(mask) == 255
    assert (out[keep] == pixels(original)[keep]).all()
    assert (out[change] == pixels(result)[change]).all()
    assert keep.any() and change.any()


def test_latent_mask_is_the_processing_mask_shrunk_bicubically_and_rounded():
    mask = rect_mask((64, 48), (16, 8, 48, 40))
    small = latent_mask(mask, 8, 6)
    expected = np.zeros((6, 8), dtype=np.float32)
    expected[1:5, 2:6] = 1
    assert small.dtype == np.float32 and (small == expected).all()
    edge = latent_mask(rect_mask((64, 64), (0, 0, 12, 64)), 8, 8)  # 1.5 latent pixels wide: rounds to 1 or 2
    assert set(edge.flat) == {0.0, 1.0} and edge[:, 0].all() and not edge[:, 2:].any()
    thin = latent_mask(rect_mask((64, 64), (4, 0, 6, 64)), 8, 8)  # 2 of 8 pixels: averaged away, not sampled
    assert not thin.any()


# --- one job's pixels --------------------------------------------------------------------------------------------


def test_whole_picture_resizes_to_the_job_and_keeps_the_original_outside_the_blurred_mask():
    image = noise_image(128, 96)
    mask = rect_mask((128, 96), (40, 30, 80, 60))
    prepared = prepare(image, mask, MaskSettings(blur=4), 128, 96)
    assert prepared.image.size == prepared.mask.size == prepared.layer.size == (128, 96)
    assert prepared.paste_to is None and np.array_equal(pixels(prepared.image), pixels(image))
    out = pixels(prepared.finish(noise_image(128, 96, 5)))
    outside = pixels(blur(mask, 4)) == 0
    assert (out[outside] == pixels(image)[outside]).all()
    inside = pixels(doubled(blur(mask, 4))) == 255
    assert (out[inside] == pixels(noise_image(128, 96, 5))[inside]).all()


def test_whole_picture_with_another_job_size_uses_the_resize_mode():
    image, mask = noise_image(100, 50), rect_mask((100, 50), (0, 0, 50, 50))
    prepared = prepare(image, mask, MaskSettings(blur=0), 64, 64, resize_mode="crop")
    assert prepared.image.size == prepared.mask.size == (64, 64)
    assert pixels(prepared.mask)[:, :20].min() == 255 and pixels(prepared.mask)[:, 44:].max() == 0


@pytest.mark.parametrize(
    ("blur_sigma", "padding", "size", "paste_to"),
    [
        (0, 32, (512, 512), (63, 168, 124, 124)),  # bbox (100,200,150,260) + 32, widened to 1:1
        (4, 32, (512, 512), (53, 158, 144, 144)),  # the blurred bbox is 10 px larger on each side
        (0, 0, (512, 512), (95, 200, 60, 60)),
        (0, 32, (768, 512), (32, 168, 186, 124)),  # widened to 3:2
    ],
)
def test_only_masked_crop_geometry(blur_sigma, padding, size, paste_to):
    image = noise_image(512, 512)
    mask = rect_mask((512, 512), (100, 200, 150, 260))
    prepared = prepare(image, mask, MaskSettings(blur=blur_sigma, area="masked", padding=padding), *size)
    assert prepared.paste_to == paste_to
    assert prepared.image.size == prepared.mask.size == size
    x, y, w, h = paste_to
    crop = image.crop((x, y, x + w, y + h))
    assert np.array_equal(pixels(prepared.image), pixels(crop.resize(size, Image.Resampling.LANCZOS)))
    delivered = prepared.finish(noise_image(size[0], size[1], seed=3))
    assert delivered.size == (512, 512)  # "Only masked" delivers the original's size
    outside = pixels(blur(mask, blur_sigma)) == 0
    assert (pixels(delivered)[outside] == pixels(image)[outside]).all()
    assert (pixels(delivered)[~outside] != pixels(image)[~outside]).any()


def test_unmasked_mode_changes_the_black_part():
    image = noise_image(64, 64)
    mask = rect_mask((64, 64), (0, 0, 32, 64))
    prepared = prepare(image, mask, MaskSettings(blur=0, mode="unmasked"), 64, 64)
    assert pixels(prepared.mask)[:, :32].max() == 0 and pixels(prepared.mask)[:, 32:].min() == 255


@pytest.mark.parametrize("content", ["fill", "noise", "nothing"])
def test_every_content_but_original_fills_the_masked_pixels_first(content):
    image = noise_image(64, 64)
    mask = rect_mask((64, 64), (16, 16, 48, 48))
    prepared = prepare(image, mask, MaskSettings(blur=4, content=content), 64, 64)
    keep = pixels(prepared.mask) == 0
    assert (pixels(prepared.image)[keep] == pixels(image)[keep]).all()
    assert (pixels(prepared.image)[~keep] != pixels(image)[~keep]).any()
    assert np.array_equal(pixels(prepared.layer), pixels(overlay(image, doubled(prepared.mask))))  # unfilled


@pytest.mark.parametrize(
    ("mode", "mask", "message"),
    [
        ("masked", Image.new("L", (32, 32), 0), r"marks nothing to change \(it is all black; white = change\)"),
        ("unmasked", Image.new("L", (32, 32), 255), "all white, and --mask-mode unmasked changes the black part"),
    ],
)
def test_a_mask_that_changes_nothing_is_refused_in_one_line(mode, mask, message):
    for area in ("whole", "masked"):
        with pytest.raises(EngineError, match=message) as err:
            prepare(noise_image(32, 32), mask, MaskSettings(mode=mode, area=area), 32, 32)
        assert "\n" not in str(err.value)


# --- settings, words and infotext -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("mask mode", "masked", "masked"),
        ("mask mode", "Inpaint not masked", "unmasked"),
        ("mask mode", "  UNMASKED ", "unmasked"),
        ("masked content", "latent noise", "noise"),
        ("masked content", "Latent  Nothing", "nothing"),
        ("masked content", "fill", "fill"),
        ("inpaint area", "Only masked", "masked"),
        ("inpaint area", "Whole picture", "whole"),
    ],
)
def test_choose_reads_sdbot_words_and_a1111_labels(name, value, expected):
    assert choose(name, value) == expected


@given(st.sampled_from(["mask mode", "masked content", "inpaint area"]), st.one_of(st.text(max_size=30), st.none()))
def test_choose_accepts_its_words_or_says_what_is_allowed(name, value):
    try:
        word = choose(name, value)
    except EngineError as err:
        assert str(err).startswith(f"{name} must be ") and "\n" not in str(err)
    else:
        assert word in {"mask mode": MASK_MODES, "masked content": MASKED_CONTENTS, "inpaint area": INPAINT_AREAS}[name]


@pytest.mark.parametrize(
    ("settings", "params"),
    [
        (MaskSettings(), {"Mask blur": 4}),
        (MaskSettings(blur=0), {}),
        (
            MaskSettings(blur=8, mode="unmasked", content="noise", area="masked", padding=48),
            {
                "Mask mode": "Inpaint not masked",
                "Mask blur": 8,
                "Inpaint area": "Only masked",
                "Masked area padding": 48,
                "Masked content": "latent noise",
            },
        ),
        (MaskSettings(content="fill"), {"Mask blur": 4, "Masked content": "fill"}),
        (MaskSettings(content="nothing"), {"Mask blur": 4, "Masked content": "latent nothing"}),
    ],
)
def test_infotext_params_are_a1111s_keys_and_values_in_its_order(settings, params):
    written = settings.infotext_params()
    assert written == params and list(written) == list(params)


@given(
    st.integers(1, 64),
    st.sampled_from(["masked", "unmasked"]),
    st.sampled_from(["fill", "original", "noise", "nothing"]),
    st.sampled_from(["whole", "masked"]),
    st.integers(0, 256),
)
def test_infotext_round_trip_restores_the_settings(blur_sigma, mode, content, area, padding):
    settings = MaskSettings(blur=blur_sigma, mode=mode, content=content, area=area, padding=padding)
    text = {key: str(value) for key, value in settings.infotext_params().items()}
    expected: dict[str, object] = {"mask_blur": blur_sigma}
    if mode != "masked":
        expected["mask_mode"] = mode
    if area != "whole":
        expected["inpaint_area"], expected["padding"] = area, padding
    if content != "original":
        expected["masked_content"] = content
    assert options_from_infotext(text) == expected


def test_infotext_values_that_do_not_read_name_the_key():
    with pytest.raises(EngineError, match="the infotext's Mask blur is 'four', which is not a whole number"):
        options_from_infotext({"Mask blur": "four"})
    with pytest.raises(
        EngineError, match="the infotext's Masked content is 'latent fog', which cannot be used: masked"
    ):
        options_from_infotext({"Masked content": "latent fog"})
    assert options_from_infotext({"Steps": "20"}) == {}
