"""LoRA/LyCORIS merging on the tiny model: pixels against an independent merge written here, multipliers,
restoring between jobs, hashes, the errors a user can cause, and pickles that are never unpickled."""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from engine.config import EngineConfig
from engine.errors import EngineError
from engine.infotext import parse_infotext
from engine.render.pipeline import Engine
from engine.request import GenerationRequest
from engine.tiny.networks import make_network, write_network

PROMPT = "a photo of a cat"


def req(prompt: str = PROMPT, **kw) -> GenerationRequest:
    return GenerationRequest(**{**dict(prompt=prompt, seed=7, width=64, height=64, steps=3, sampler="Euler"), **kw})


def pixels(result) -> np.ndarray:
    return np.asarray(result.images[0].image)


@pytest.fixture(scope="module")
def shared_dir(tmp_path_factory, tiny_sd15: Path) -> Path:
    """One models dir for the module (loading the tiny model costs seconds on a busy machine); each test writes
    LoRA files under names of its own."""
    import shutil

    root = tmp_path_factory.mktemp("lora-models")
    shutil.copytree(tiny_sd15, root / "tiny-sd15")
    (root / "Lora").mkdir()
    return root


@pytest.fixture(scope="module")
def _engines(shared_dir: Path) -> tuple[Engine, Engine, dict]:
    engine, plain = Engine(EngineConfig(models_dir=shared_dir)), Engine(EngineConfig(models_dir=shared_dir))
    pipe = pipe_of(plain)
    snapshot = {
        name: {k: v.clone() for k, v in getattr(pipe, name).state_dict().items()} for name in ("unet", "text_encoder")
    }
    return engine, plain, snapshot


@pytest.fixture
def models_dir(shared_dir: Path) -> Path:
    return shared_dir


@pytest.fixture
def engine(_engines) -> Engine:
    return _engines[0]


@pytest.fixture
def plain(_engines) -> Engine:
    """A second engine on the same files, whose weights the tests change by hand (reset for every test)."""
    _, plain, snapshot = _engines
    pipe = pipe_of(plain)
    for name, state in snapshot.items():
        getattr(pipe, name).load_state_dict(state)
    return plain


def pipe_of(engine: Engine):
    return engine.models.checkpoint("tiny-sd15").pipe


# --- an independent merge: the formulas written out, module by module -------------------------------------


def _modules(pipe) -> dict[str, tuple[str, torch.nn.Module]]:
    found = {}
    for name, module in pipe.unet.named_modules():
        found["lora_unet_" + name.replace(".", "_")] = ("unet", module)
        found["unet." + name] = ("unet", module)
    for name, module in pipe.text_encoder.named_modules():
        found["lora_te_text_model_" + name.replace(".", "_")] = ("te", module)
        found["text_encoder.text_model." + name] = ("te", module)
    return found


def merge_by_hand(pipe, path: Path, te: float, unet: float) -> None:
    state = load_file(str(path))
    groups: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        for suffix in (
            "lora_down.weight",
            "lora_up.weight",
            "lora_A.weight",
            "lora_B.weight",
            "alpha",
            "hada_w1_a",
            "hada_w1_b",
            "hada_w2_a",
            "hada_w2_b",
            "lokr_w1",
            "lokr_w2_a",
            "lokr_w2_b",
        ):
            if key.endswith("." + suffix):
                groups.setdefault(key[: -len(suffix) - 1], {})[suffix] = value
    modules = _modules(pipe)
    with torch.no_grad():
        for key, w in groups.items():
            part, module = modules[key]
            weight = module.weight
            if "lora_A.weight" in w:
                up, down = w["lora_B.weight"], w["lora_A.weight"]
                delta, rank = up @ down, None
            elif "lora_down.weight" in w:
                up, down = w["lora_up.weight"], w["lora_down.weight"]
                rank = down.shape[0]
                delta = up.reshape(up.shape[0], rank) @ down.reshape(rank, -1)
            elif "hada_w1_a" in w:
                rank = w["hada_w1_b"].shape[0]
                delta = (w["hada_w1_a"] @ w["hada_w1_b"]) * (w["hada_w2_a"] @ w["hada_w2_b"])
            else:
                rank = w["lokr_w2_b"].shape[0]
                delta = torch.kron(w["lokr_w1"], w["lokr_w2_a"] @ w["lokr_w2_b"])
            delta = delta.reshape(weight.shape)
            if rank is not None:
                delta = delta * (w["alpha"].item() / rank)
            multiplier = te if part == "te" else unet
            weight.copy_(weight.float() + delta * multiplier)


# --- pixels -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["lora", "loha", "lokr", "peft"])
def test_pixels_equal_an_independent_merge(engine, plain, models_dir, kind):
    path = write_network(pipe_of(engine), models_dir / "Lora" / f"{kind}-net.safetensors", kind, seed=3)
    tagged = engine.render(req(f"{PROMPT} <lora:{kind}-net:0.8>"))
    merge_by_hand(pipe_of(plain), path, te=0.8, unet=0.8)
    by_hand = plain.render(req())
    assert np.array_equal(pixels(tagged), pixels(by_hand))
    assert not np.array_equal(pixels(tagged), pixels(engine.render(req())))  # and it did change the image


def test_lyco_tag_subfolders_and_the_lycoris_folder(engine, plain, models_dir):
    path = write_network(pipe_of(engine), models_dir / "LyCORIS" / "styles" / "hada.safetensors", "loha", seed=4)
    tagged = engine.render(req(f"{PROMPT} <lyco:hada:1>"))
    merge_by_hand(pipe_of(plain), path, te=1.0, unet=1.0)
    assert np.array_equal(pixels(tagged), pixels(plain.render(req())))


def test_te_and_unet_multipliers_act_on_their_own_parts(engine, plain, models_dir):
    path = write_network(pipe_of(engine), models_dir / "Lora" / "both.safetensors", seed=5)
    te_only = engine.render(req(f"{PROMPT} <lora:both:1:0>"))
    unet_named = engine.render(req(f"{PROMPT} <lora:both:te=0:unet=0.7>"))
    merge_by_hand(pipe_of(plain), path, te=1.0, unet=0.0)
    assert np.array_equal(pixels(te_only), pixels(plain.render(req())))
    merge_by_hand(pipe_of(plain), path, te=-1.0, unet=0.7)  # take the TE part back out, add the UNet's
    hand = plain.render(req())
    assert np.abs(pixels(unet_named).astype(int) - pixels(hand).astype(int)).max() <= 1
    assert not np.array_equal(pixels(te_only), pixels(unet_named))


def test_two_loras_add_up(engine, plain, models_dir):
    a = write_network(pipe_of(engine), models_dir / "Lora" / "a.safetensors", seed=6)
    b = write_network(pipe_of(engine), models_dir / "Lora" / "b.safetensors", "loha", seed=7)
    tagged = engine.render(req(f"<lora:b:0.5> {PROMPT} <lora:a:0.6>"))
    merge_by_hand(pipe_of(plain), a, te=0.6, unet=0.6)
    merge_by_hand(pipe_of(plain), b, te=0.5, unet=0.5)
    hand = plain.render(req())
    assert np.abs(pixels(tagged).astype(int) - pixels(hand).astype(int)).max() <= 1  # float sums in another order


def test_weight_zero_equals_no_lora(engine, models_dir):
    write_network(pipe_of(engine), models_dir / "Lora" / "x.safetensors", seed=8)
    none = engine.render(req())
    assert np.array_equal(pixels(engine.render(req(f"{PROMPT} <lora:x:0>"))), pixels(none))


def test_a_job_after_a_lora_job_equals_the_same_job_run_first(engine, models_dir):
    write_network(pipe_of(engine), models_dir / "Lora" / "x.safetensors", seed=9)
    write_network(pipe_of(engine), models_dir / "Lora" / "y.safetensors", "loha", seed=10)
    first = engine.render(req())
    y_first = engine.render(req(f"{PROMPT} <lora:y:1>"))
    engine.render(req(f"{PROMPT} <lora:x:1>"))
    assert np.array_equal(pixels(engine.render(req())), pixels(first))
    engine.render(req(f"{PROMPT} <lora:x:1>"))
    assert np.array_equal(pixels(engine.render(req(f"{PROMPT} <lora:y:1>"))), pixels(y_first))


def test_the_same_set_merges_once_and_tags_in_the_negative_prompt_count(engine, models_dir):
    write_network(pipe_of(engine), models_dir / "Lora" / "x.safetensors", seed=11)
    in_prompt = engine.render(req(f"{PROMPT} <lora:x:0.5>"))
    merges = engine.loras.merges
    in_negative = engine.render(req(PROMPT, negative_prompt="<lora:X:0.5>"))
    assert engine.loras.merges == merges  # same set (names compare case-insensitively): nothing merged again
    assert np.array_equal(pixels(in_prompt), pixels(in_negative))


def test_tags_are_removed_before_encoding_and_kept_in_the_infotext(engine, models_dir):
    write_network(pipe_of(engine), models_dir / "Lora" / "x.safetensors", seed=12)
    stripped = engine.render(req(f"{PROMPT} <lora:x:0>"))
    assert np.array_equal(pixels(stripped), pixels(engine.render(req())))
    info = parse_infotext(stripped.images[0].infotext)
    assert info.prompt == f"{PROMPT} <lora:x:0>"


def test_dyn_keeps_the_first_ranks(engine, plain, models_dir):
    """A1111 with DYN: up[:, :dyn] @ down[:dyn] with the file's own alpha / rank. A rank-2 file with half the
    alpha has the same scale, so merging it by hand must give the same pixels."""
    state = make_network(pipe_of(engine), rank=4, seed=13)
    save_file(state, str(models_dir / "Lora" / "dyn.safetensors"))
    cut = {}
    for key, value in state.items():
        if key.endswith("lora_down.weight"):
            cut[key] = value[:2].contiguous()
        elif key.endswith("lora_up.weight"):
            cut[key] = value[:, :2].contiguous()
        else:
            cut[key] = value / 2
    save_file(cut, str(models_dir.parent / "cut.safetensors"))
    dyn = engine.render(req(f"{PROMPT} <lora:dyn:1:1:2>"))
    merge_by_hand(pipe_of(plain), models_dir.parent / "cut.safetensors", te=1.0, unet=1.0)
    assert np.array_equal(pixels(dyn), pixels(plain.render(req())))
    assert not np.array_equal(pixels(dyn), pixels(engine.render(req(f"{PROMPT} <lora:dyn:1>"))))


# --- infotext hashes ------------------------------------------------------------------------------------------


def test_lora_hashes_are_a1111_addnet_hashes(engine, models_dir):
    path = write_network(
        pipe_of(engine), models_dir / "Lora" / "x.safetensors", seed=14, metadata={"ss_output_name": "x"}
    )
    data = path.read_bytes()
    header = int.from_bytes(data[:8], "little")
    expected = hashlib.sha256(data[8 + header :]).hexdigest()[:12]
    result = engine.render(req(f"{PROMPT} <lora:x:0.7>"))
    params = parse_infotext(result.images[0].infotext).params
    assert params["Lora hashes"] == f"x: {expected}"
    assert '"x: ' in result.images[0].infotext  # quoted, as A1111 writes it
    assert "Lora hashes" not in parse_infotext(engine.render(req()).images[0].infotext).params


# --- errors: one clear line, the model unchanged -------------------------------------------------------------


def test_unknown_name_lists_the_closest_first(engine, models_dir):
    for name in ("zebra", "add_detail", "add_details_v2"):
        write_network(pipe_of(engine), models_dir / "Lora" / "names" / f"{name}.safetensors", seed=1)
    with pytest.raises(EngineError, match=r"unknown LoRA 'add_detial'; available: add_detail, add_details_v2, "):
        engine.render(req(f"{PROMPT} <lora:add_detial:1>"))


def test_sdxl_lora_on_sd15_names_the_file_and_both_families(engine, models_dir):
    write_network(
        pipe_of(engine),
        models_dir / "Lora" / "xl.safetensors",
        seed=2,
        metadata={"ss_base_model_version": "sdxl_base_v1-0"},
    )
    before = pixels(engine.render(req()))
    with pytest.raises(EngineError) as err:
        engine.render(req(f"{PROMPT} <lora:xl:1>"))
    assert str(err.value) == "LoRA xl (xl.safetensors) is for SDXL; this checkpoint is SD 1.x/2.x"
    assert np.array_equal(pixels(engine.render(req())), before)


def test_a_file_whose_keys_match_nothing(engine, models_dir):
    save_file(
        {
            "lora_unet_nowhere.lora_down.weight": torch.zeros(2, 4),
            "lora_unet_nowhere.lora_up.weight": torch.zeros(4, 2),
        },
        str(models_dir / "Lora" / "odd.safetensors"),
    )
    with pytest.raises(EngineError, match=r"LoRA odd \(odd.safetensors\) has no weights that match"):
        engine.render(req(f"{PROMPT} <lora:odd:1>"))


def test_a_failing_set_leaves_the_previous_merge_consistent(engine, models_dir):
    write_network(pipe_of(engine), models_dir / "Lora" / "x.safetensors", seed=15)
    state = make_network(pipe_of(engine), seed=16)
    key = next(k for k in state if k.endswith("lora_down.weight"))
    state[key] = torch.zeros(4, 3)  # a layer of the wrong size
    save_file(state, str(models_dir / "Lora" / "bad.safetensors"))
    with_x = pixels(engine.render(req(f"{PROMPT} <lora:x:1>")))
    with pytest.raises(EngineError, match="LoRA bad does not fit this checkpoint"):
        engine.render(req(f"{PROMPT} <lora:x:1> <lora:bad:1>"))
    assert np.array_equal(pixels(engine.render(req(f"{PROMPT} <lora:x:1>"))), with_x)


def test_factors_that_do_not_multiply_are_a_clear_error(engine, models_dir):
    state = make_network(pipe_of(engine), seed=18)
    key = next(k for k in state if k.endswith("lora_up.weight") and state[k].ndim == 2)
    state[key] = torch.zeros(state[key].shape[0], 3)
    save_file(state, str(models_dir / "Lora" / "mismatch.safetensors"))
    with pytest.raises(EngineError, match=r"LoRA mismatch: the weights of lora_\w+ do not fit together"):
        engine.render(req(f"{PROMPT} <lora:mismatch:1>"))


def test_unknown_weight_kinds_are_refused_not_ignored(engine, models_dir):
    state = make_network(pipe_of(engine), seed=17)
    state[next(iter(state)).rsplit(".", 2)[0] + ".dora_scale"] = torch.ones(4)
    save_file(state, str(models_dir / "Lora" / "dora.safetensors"))
    with pytest.raises(EngineError, match="weights of a kind sdbot cannot merge"):
        engine.render(req(f"{PROMPT} <lora:dora:1>"))


def test_malformed_tags_fail_when_the_request_is_made():
    with pytest.raises(EngineError, match=r"<lora:x:strong>: the TE multiplier must be a number"):
        req(f"{PROMPT} <lora:x:strong>")
    with pytest.raises(EngineError, match=r"not <hypernet:…>"):
        req(f"{PROMPT} <hypernet:x:1>")


def test_batch_key_includes_the_lora_set():
    assert req("cat <lora:a:1>").batch_key() == req("dog <lora:A:1>").batch_key()
    assert req("cat <lora:a:1>").batch_key() != req("cat <lora:a:0.5>").batch_key()
    assert req("cat").batch_key() != req("cat <lora:a:1>").batch_key()


# --- pickles ---------------------------------------------------------------------------------------------------


class _Marker:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def write_marker_pickle(path: Path, marker: Path, embedding: bool = False) -> None:
    payload = {"string_to_param": {"*": _Marker(marker)}} if embedding else {"lora_te_x.alpha": _Marker(marker)}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(payload, protocol=2))


@pytest.mark.parametrize("allow_pickle", [False, True])
def test_a_pickle_that_writes_a_marker_is_never_unpickled(tmp_path, tiny_sd15, allow_pickle):
    import shutil

    models_dir = tmp_path / "models"
    shutil.copytree(tiny_sd15, models_dir / "tiny-sd15")
    marker = tmp_path / "pwned"
    write_marker_pickle(models_dir / "Lora" / "evil.pt", marker)
    write_marker_pickle(models_dir / "embeddings" / "evilemb.pt", marker, embedding=True)
    engine = Engine(EngineConfig(models_dir=models_dir, allow_pickle=allow_pickle))
    with pytest.raises(EngineError, match=r"evil.pt (is refused \(pickle format|was refused: it holds more)"):
        engine.render(req(f"{PROMPT} <lora:evil:1>"))
    engine.render(req(f"{PROMPT} evilemb"))  # the embedding is left out, the job still renders
    assert not marker.exists()


def test_listing_reads_family_and_trigger_words_from_metadata(engine, models_dir):
    from engine.networks.library import NetworkLibrary

    tags = {"img": {"red hair": 9, "smile": 4, "1girl": 12}}
    write_network(
        pipe_of(engine),
        models_dir / "Lora" / "girl.safetensors",
        seed=1,
        metadata={"ss_base_model_version": "sd_v1", "ss_tag_frequency": json.dumps(tags)},
    )
    library = NetworkLibrary(EngineConfig(models_dir=models_dir))
    info = library.lora_info(library.lora("GIRL"))
    assert info.family == "SD 1.x/2.x" and info.triggers == ("1girl", "red hair", "smile")
