"""engine.infotext: A1111's infotext written, read from PNGs and mapped to request options as A1111 does (spec §3);
the parser's own tables are in test_infotext_parser.py.

Table tests pin real-looking texts; hypothesis properties check that everything `format_infotext` can write
reads back unchanged and that no text, however broken, makes the parser raise anything but EngineError.
"""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from PIL import Image

from engine.errors import EngineError
from engine.infotext import (
    Infotext,
    format_infotext,
    infotext_for_request,
    parse_infotext,
    png_bytes,
    read_png_infotext,
    request_options,
    to_dict,
)
from engine.infotext_parser import _find_pairs
from engine.request import GenerationRequest
from engine.samplers import sampler_labels

# A text as A1111 1.10 writes it for a LoRA render: two-line prompt with weights and a LoRA tag, two-line
# negative prompt, new sampler form, a quoted value that itself contains ", " and ": ".
REAL = (
    "masterpiece, best quality, 1girl,\n"
    "(detailed eyes:1.2), <lora:add_detail:0.5>\n"
    "Negative prompt: (worst quality, low quality:1.4), EasyNegative\n"
    "bad hands\n"
    "Steps: 28, Sampler: DPM++ 2M, CFG scale: 7, Seed: 1234567890, Size: 512x768, Model hash: 6ce0161689, "
    "Model: v1-5-pruned-emaonly, VAE hash: 735e4c3a44, VAE: vae-ft-mse-840000-ema-pruned.safetensors, "
    'Clip skip: 2, Schedule type: Karras, Emphasis: Original, Lora hashes: "a: 1, b: 2", Version: v1.10.1'
)
REAL_PARAMS = {
    "Steps": "28",
    "Sampler": "DPM++ 2M",
    "CFG scale": "7",
    "Seed": "1234567890",
    "Size": "512x768",
    "Model hash": "6ce0161689",
    "Model": "v1-5-pruned-emaonly",
    "VAE hash": "735e4c3a44",
    "VAE": "vae-ft-mse-840000-ema-pruned.safetensors",
    "Clip skip": "2",
    "Schedule type": "Karras",
    "Emphasis": "Original",
    "Lora hashes": "a: 1, b: 2",
    "Version": "v1.10.1",
}

OLD_FORM = (
    "a photo of a cat\n"
    "Steps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7.5, Seed: 42, Size: 512x512, Model hash: 45dee52b"
)
NEW_FORM = (
    "a photo of a cat\n"
    "Steps: 20, Sampler: DPM++ 2M, CFG scale: 7.5, Seed: 42, Size: 512x512, Model hash: 45dee52b, "
    "Schedule type: Karras"
)

# --- writing: tables -----------------------------------------------------------------------------------------

FORMAT_CASES = [
    pytest.param(
        "a cat",
        "",
        {"Steps": 20, "Sampler": "Euler a", "CFG scale": 7.0, "Seed": 1, "Size": "512x512"},
        "a cat\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 512x512",
        id="basic",
    ),
    pytest.param(
        "p",
        "",
        {
            "Version": "v1",
            "Foo": "x",
            "Lora hashes": "a: 1, b: 2",
            "Seed": 5,
            "Schedule type": "Karras",
            "Steps": 30,
            "Bar": None,
            "Denoising strength": 0.5,
            "Zed": "y",
            "CFG scale": 7.5,
            "Emphasis": "Original",
            "Clip skip": 2,
            "RNG": "CPU",
        },
        "p\nSteps: 30, CFG scale: 7.5, Seed: 5, Denoising strength: 0.5, Clip skip: 2, RNG: CPU, "
        'Schedule type: Karras, Emphasis: Original, Lora hashes: "a: 1, b: 2", Foo: x, Zed: y, Version: v1',
        id="order-none-unknown-version",
    ),
    pytest.param(
        "p",
        "",
        {"A b": "x\ny", "Cc": "猫, 😀", "Dd": 'say "hi"', "Ee": "t: 1"},
        'p\nA b: "x\\ny", Cc: "猫, 😀", Dd: say "hi", Ee: "t: 1"',
        id="quoting",
    ),
    pytest.param(
        "",
        "ugly",
        {"Steps": 1, "Seed": 2, "CFG scale": 3},
        "Negative prompt: ugly\nSteps: 1, CFG scale: 3, Seed: 2",
        id="negative-only-and-order",
    ),
    pytest.param("a", "b", {}, "a\nNegative prompt: b", id="no-params"),
    pytest.param("  a  \n", "", {}, "a", id="stripped"),
    pytest.param(
        "line 1\nline 2",
        "n1\nn2",
        {"Tiling": True, "Steps": 1, "CFG scale": 1e-7},
        "line 1\nline 2\nNegative prompt: n1\nn2\nSteps: 1, CFG scale: 1e-07, Tiling: True",
        id="multiline",
    ),
]


@pytest.mark.parametrize(("prompt", "negative", "params", "expected"), FORMAT_CASES)
def test_format_infotext(prompt: str, negative: str, params: dict[str, object], expected: str) -> None:
    assert format_infotext(prompt, negative, params) == expected


def test_real_text_reformatted_reads_back_the_same() -> None:
    info = parse_infotext(REAL)
    text = format_infotext(info.prompt, info.negative_prompt or "", info.params)
    assert parse_infotext(text) == info


REQUEST_CASES = [
    pytest.param(
        dict(
            prompt="a cat",
            negative_prompt="blurry",
            steps=28,
            sampler="DPM++ 2M Karras",
            width=512,
            height=768,
            clip_skip=2,
            vae="vae-ft-mse-840000-ema-pruned.safetensors",
            model="v1-5-pruned-emaonly",
        ),
        dict(
            seed=1234,
            model_name="v1-5-pruned-emaonly",
            model_hash="6ce0161689",
            vae_name="vae-ft-mse-840000-ema-pruned.safetensors",
            vae_hash="735e4c3a44",
            version="sdbot 0.1.0",
        ),
        "a cat\nNegative prompt: blurry\nSteps: 28, Sampler: DPM++ 2M, CFG scale: 7, Seed: 1234, Size: 512x768, "
        "Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, VAE hash: 735e4c3a44, "
        "VAE: vae-ft-mse-840000-ema-pruned.safetensors, Clip skip: 2, RNG: CPU, Schedule type: Karras, "
        "Version: sdbot 0.1.0",
        id="full",
    ),
    pytest.param(
        dict(prompt="a cat", sampler="Euler a", cfg_scale=7.5, model="m"),
        dict(seed=7, model_name="m", model_hash="abc1234567", vae_name=None, vae_hash=None, version="v"),
        "a cat\nSteps: 20, Sampler: Euler a, CFG scale: 7.5, Seed: 7, Size: 512x512, Model hash: abc1234567, "
        "Model: m, RNG: CPU, Version: v",
        id="automatic-schedule-clip1-baked-vae",
    ),
]


@pytest.mark.parametrize(("fields", "kwargs", "expected"), REQUEST_CASES)
def test_infotext_for_request(fields: dict, kwargs: dict, expected: str) -> None:
    assert infotext_for_request(GenerationRequest(**fields), **kwargs) == expected


# --- request options -----------------------------------------------------------------------------------------


def test_request_options_real() -> None:
    options, unused = request_options(parse_infotext(REAL))
    assert options == {
        "prompt": "masterpiece, best quality, 1girl,\n(detailed eyes:1.2), <lora:add_detail:0.5>",
        "negative_prompt": "(worst quality, low quality:1.4), EasyNegative\nbad hands",
        "steps": 28,
        "sampler": "DPM++ 2M",
        "schedule": "Karras",
        "cfg_scale": 7.0,
        "seed": 1234567890,
        "width": 512,
        "height": 768,
        "model": "v1-5-pruned-emaonly",
        "vae": "vae-ft-mse-840000-ema-pruned.safetensors",
        "clip_skip": 2,
    }
    assert unused == ["Emphasis"]  # Model hash, VAE hash, Version, Lora hashes: informational
    GenerationRequest(**options)


@pytest.mark.parametrize("text", [OLD_FORM, NEW_FORM])
def test_request_options_both_sampler_forms(text: str) -> None:
    options, unused = request_options(parse_infotext(text))
    assert (options["sampler"], options["schedule"]) == ("DPM++ 2M", "Karras")
    assert options["clip_skip"] == 1  # missing Clip skip means 1
    assert options["cfg_scale"] == 7.5
    assert "vae" not in options and "model" not in options
    assert unused == []
    request = GenerationRequest(**options)
    assert request.sampler_label == "DPM++ 2M Karras"


def test_request_options_reports_unknown_not_informational() -> None:
    text = (
        "p\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 512x512, Model hash: x, "
        "Denoising strength: 0.7, RNG: GPU, Hires upscale: 2, ENSD: 31337, Version: v1.6.0"
    )
    options, unused = request_options(parse_infotext(text))
    assert unused == ["ENSD"]  # Denoising strength and Hires upscale are settings
    assert options["strength"] == 0.7 and options["hires"] == 2.0
    assert options["sampler"] == "Euler a" and options["schedule"] == "Automatic"


def test_request_options_prompt_only() -> None:
    assert request_options(parse_infotext("a cat")) == ({"prompt": "a cat", "negative_prompt": "", "clip_skip": 1}, [])


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("Steps", "abc"),
        ("Steps", "20.5"),
        ("CFG scale", "seven"),
        ("CFG scale", "nan"),
        ("Seed", "1.5"),
        ("Size", "big"),
        ("Clip skip", "two"),
        ("Sampler", "Nope"),
        ("Sampler", "DPM fast"),
    ],
)
def test_request_options_bad_values_name_key_and_value(key: str, value: str) -> None:
    params = {"Steps": "20", "Sampler": "Euler", "CFG scale": "7", key: value}
    with pytest.raises(EngineError) as err:
        request_options(Infotext("p", None, params))
    assert key in str(err.value) and value in str(err.value)


def test_request_options_bad_schedule_names_it() -> None:
    with pytest.raises(EngineError, match="Schedule type 'Weird'"):
        request_options(Infotext("p", None, {"Sampler": "Euler", "Schedule type": "Weird"}))


# --- PNG -----------------------------------------------------------------------------------------------------


def _image() -> Image.Image:
    return Image.new("RGB", (8, 8), (200, 30, 30))


def test_png_cjk_emoji_survive() -> None:
    text = "一只猫 😺, ((masterpiece))\nNegative prompt: 低品質\nSteps: 20, Sampler: Euler a, CFG scale: 7"
    data = png_bytes(_image(), text)
    assert b"iTXt" in data  # not Latin-1: UTF-8 chunk
    assert read_png_infotext(data) == text
    assert parse_infotext(read_png_infotext(data) or "").prompt == "一只猫 😺, ((masterpiece))"


def test_png_latin1_uses_text_chunk(tmp_path) -> None:
    text = "café\nSteps: 20, Sampler: Euler a, CFG scale: 7"
    data = png_bytes(_image(), text)
    assert b"tEXt" in data and b"iTXt" not in data
    path = tmp_path / "x.png"
    path.write_bytes(data)
    assert read_png_infotext(path) == text
    assert read_png_infotext(str(path)) == text
    with Image.open(io.BytesIO(data)) as image:  # the pixels are untouched
        assert image.getpixel((0, 0)) == (200, 30, 30)


def test_png_other_modes_are_converted() -> None:
    data = png_bytes(Image.new("CMYK", (4, 4)), "x")
    assert read_png_infotext(data) == "x"


def test_png_without_parameters() -> None:
    buffer = io.BytesIO()
    _image().save(buffer, format="PNG")
    assert read_png_infotext(buffer.getvalue()) is None


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def test_png_text_after_image_data() -> None:
    buffer = io.BytesIO()
    _image().save(buffer, format="PNG")
    data = buffer.getvalue()
    assert data.endswith(_chunk(b"IEND", b""))
    data = data[:-12] + _chunk(b"tEXt", b"parameters\x00late text") + _chunk(b"IEND", b"")
    assert read_png_infotext(data) == "late text"


def test_png_reading_errors(tmp_path) -> None:
    with pytest.raises(EngineError, match="not a PNG image"):
        read_png_infotext(b"hello")
    jpeg = io.BytesIO()
    _image().save(jpeg, format="JPEG")
    with pytest.raises(EngineError, match="not a PNG image"):
        read_png_infotext(jpeg.getvalue())
    with pytest.raises(EngineError, match="not a PNG image"):
        read_png_infotext(png_bytes(_image(), "x")[:40])  # truncated
    with pytest.raises(EngineError, match="cannot read"):
        read_png_infotext(tmp_path / "missing.png")
    with pytest.raises(EngineError):
        read_png_infotext(123)  # type: ignore[arg-type]


def test_png_bytes_rejects_unencodable_text() -> None:
    with pytest.raises(EngineError):
        png_bytes(_image(), "lone surrogate \ud800")


# --- properties ----------------------------------------------------------------------------------------------

# Characters that matter to the format, plus any character at all (no lone surrogates: not valid text, and a
# PNG cannot store them).
_ANY_CHAR = st.characters(exclude_categories=("Cs",))
_SYNTAX_CHARS = st.sampled_from(list(',:"\\ \t\r-/_x\u3000\u2028') + ["猫", "😀", "é"])
_TOKENS = st.sampled_from(["Negative prompt:", "Steps: 20", ", ", ": ", '"', '\\"', "a b", "Key-x/y: v"])


def _line_text(alphabet: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """Short text without "\\n", built from syntax tokens and arbitrary characters."""
    return (
        st.lists(st.one_of(_TOKENS, st.text(alphabet, max_size=6)), max_size=6)
        .map("".join)
        .filter(lambda s: "\n" not in s)
    )


_LINE_ALPHABET = st.one_of(_SYNTAX_CHARS, _ANY_CHAR.filter(lambda c: c != "\n"))


def _prompt_line_ok(line: str) -> bool:
    # A1111 strips every prompt line, so surrounding whitespace cannot survive; and a line starting with
    # "Negative prompt:" is where the negative prompt begins (in the negative prompt the prefix is removed again).
    return line == line.strip() and not line.startswith("Negative prompt:")


_PROMPT = (
    st.lists(_line_text(_LINE_ALPHABET).filter(_prompt_line_ok), max_size=4)
    .map("\n".join)
    .filter(
        # The whole text is stripped, so blank lines at either end of a prompt are lost.
        lambda s: s == s.strip()
    )
)

# Keys: A1111's pattern only sees `\w[\w \-/]+` (two characters at least). A trailing space is excluded as the
# brief asks (it would round-trip, but "Key : v" is not something A1111 writes).
_KEY = st.from_regex(r"\w[\w \-/]+", fullmatch=True).filter(lambda k: k == k.rstrip() and len(k) <= 30)


def _value_ok(value: str) -> bool:
    if "," in value or ":" in value or "\n" in value:
        return True  # written as JSON, which reads back exactly
    # Written as is: A1111's pattern skips whitespace after ':' and the whole text is stripped (so surrounding
    # whitespace is lost), and a bare value starting with '"' can be taken for a quoted one (decoded, or even
    # swallowing the next pair when that one is quoted).
    return value == value.strip() and not value.startswith('"')


_VALUE = st.text(st.one_of(_SYNTAX_CHARS, st.just("\n"), _ANY_CHAR), max_size=12).filter(_value_ok)
# Empty, or at least 3 pairs: A1111 only takes a last line with >= 3 pairs as the parameter line, so a 1-2 pair
# line is read back as prompt text.
_PARAMS = st.one_of(st.just({}), st.dictionaries(_KEY, _VALUE, min_size=3, max_size=6))


@given(prompt=_PROMPT, negative=_PROMPT, params=_PARAMS)
@settings(deadline=None)
def test_format_parse_round_trip(prompt: str, negative: str, params: dict[str, str]) -> None:
    text = format_infotext(prompt, negative, params)
    if not params:
        # Without a parameter line, the prompt's (or negative prompt's) last line is the text's last line: if
        # it happens to hold >= 3 `Key: value` pairs, A1111 reads it as parameters.
        assume(len(_find_pairs(text.split("\n")[-1])) < 3)
    info = parse_infotext(text)
    assert info == Infotext(prompt, negative or None, params)


_TEXT = st.lists(
    st.one_of(_TOKENS, st.just("\n"), st.text(st.one_of(_SYNTAX_CHARS, _ANY_CHAR), max_size=8)), max_size=12
).map("".join)


@given(st.one_of(_TEXT, st.text()))
def test_parse_never_raises(text: str) -> None:
    info = parse_infotext(text)
    assert isinstance(info.prompt, str)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in info.params.items())
    to_dict(info)
    try:
        request_options(info)
    except EngineError:
        pass


@given(st.one_of(st.binary(max_size=200), st.binary(max_size=200).map(lambda b: b"\x89PNG\r\n\x1a\n" + b)))
@settings(deadline=None)
def test_read_png_never_raises_other_errors(data: bytes) -> None:
    try:
        read_png_infotext(data)
    except EngineError:
        pass


_SIDE = st.integers(8, 128).map(lambda n: n * 8)


@given(
    prompt=_PROMPT,
    negative=_PROMPT,
    steps=st.integers(1, 150),
    cfg=st.floats(1.0, 30.0),
    sampler=st.sampled_from(sampler_labels()),
    seed=st.integers(0, 2**32 - 2),
    width=_SIDE,
    height=_SIDE,
    clip_skip=st.integers(1, 12),
    vae=st.sampled_from([None, "vae-ft-mse-840000-ema-pruned.safetensors"]),
)
@settings(deadline=None)
def test_request_round_trip(
    prompt: str,
    negative: str,
    steps: int,
    cfg: float,
    sampler: str,
    seed: int,
    width: int,
    height: int,
    clip_skip: int,
    vae: str | None,
) -> None:
    request = GenerationRequest(
        prompt=prompt,
        negative_prompt=negative,
        steps=steps,
        cfg_scale=cfg,
        sampler=sampler,
        seed=-1,
        width=width,
        height=height,
        clip_skip=clip_skip,
        vae=vae or "auto",
        model="v1-5-pruned-emaonly",
    )
    text = infotext_for_request(
        request,
        seed=seed,
        model_name="v1-5-pruned-emaonly",
        model_hash="6ce0161689",
        vae_name=vae,
        vae_hash="735e4c3a44" if vae else None,
        version="sdbot 0.1.0",
    )
    options, unused = request_options(parse_infotext(text))
    assert unused == []
    assert GenerationRequest(**options) == request.replace(seed=seed)
