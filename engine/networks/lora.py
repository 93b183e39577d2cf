"""LoRA and LyCORIS files merged into a pipeline's weights, as A1111's Lora extension merges them.

A1111 (`extensions-builtin/Lora`: `network_lora.py`, `network_hada.py`, `network_lokr.py`, `lyco_helpers.py`)
adds to each matched Linear/Conv2d weight `delta × scale × multiplier`, where `scale` is `alpha / rank` when the
file has an alpha (else 1) and the multiplier is the tag's TE value for text-encoder modules and its UNET value
for the UNet. The deltas of each kind (LoRA / LoCon, LoHa, LoKr) are `engine.networks.lora_deltas`.

diffusers' loader needs peft and refuses LoHa and SD 1.5 LoKr, so sdbot owns the merge (the same sums). Every
delta is computed before any weight changes, so a bad file fails the job with the model untouched.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from engine.errors import EngineError
from engine.networks.family import FAMILY_LABELS, SGM_BLOCKS, file_family
from engine.networks.lora_deltas import module_delta

log = logging.getLogger(__name__)

# Weight names inside one module's group, longest first so `lokr_w1_a` wins over `lokr_w1`.
_SUFFIXES = tuple(
    sorted(
        (
            "lora_down.weight",
            "lora_up.weight",
            "lora_mid.weight",
            "lora_A.weight",
            "lora_B.weight",
            "alpha",
            "scale",
            "hada_w1_a",
            "hada_w1_b",
            "hada_w2_a",
            "hada_w2_b",
            "hada_t1",
            "hada_t2",
            "lokr_w1",
            "lokr_w1_a",
            "lokr_w1_b",
            "lokr_w2",
            "lokr_w2_a",
            "lokr_w2_b",
            "lokr_t2",
        ),
        key=len,
        reverse=True,
    )
)
# diffusers / PEFT prefixes -> kohya prefixes (SD 1.x/2.x; SDXL's two text encoders below).
_PEFT_PREFIXES = {"unet.": "lora_unet_", "text_encoder.": "lora_te_", "text_encoder_2.": "lora_te2_"}


@dataclass
class ParsedNetwork:
    """A LoRA/LyCORIS file's weights grouped by the kohya module key they patch (`lora_unet_…_to_q`)."""

    name: str
    family: str  # "sd1", "sd2", "sdxl" or "sd" (SD 1.x or 2.x: the file does not say)
    groups: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)


def parse_network(
    name: str, state: dict[str, torch.Tensor], metadata: dict[str, str], unet_config=None
) -> ParsedNetwork:
    """Group a state dict by module; keys this engine cannot use are an error naming one of them.

    `unet_config` (the checkpoint's UNet config) maps kohya's SDXL UNet names, which follow the original (SGM)
    UNet, onto diffusers' blocks.
    """
    family = file_family(list(state), metadata)
    if unet_config is not None and any(k.startswith(SGM_BLOCKS) for k in state):
        state = sgm_to_diffusers(name, state, unet_config)
    groups: dict[str, dict[str, torch.Tensor]] = {}
    unknown: list[str] = []
    for key, value in state.items():
        suffix = next((s for s in _SUFFIXES if key.endswith("." + s)), None)
        if suffix is None:
            unknown.append(key)
            continue
        module = _kohya_module(key[: -len(suffix) - 1], family)
        groups.setdefault(module, {})[suffix] = value
    if unknown:
        raise EngineError(
            f"LoRA {name}: {len(unknown)} weights of a kind sdbot cannot merge (e.g. {unknown[0]}); sdbot merges "
            f"LoRA, LoCon, LoHa, LoKr and diffusers/PEFT lora_A/lora_B files"
        )
    return ParsedNetwork(name, family, groups)


def _kohya_module(module: str, family: str) -> str:
    """`unet.down_blocks.0.….to_q` (diffusers/PEFT) -> `lora_unet_down_blocks_0_…_to_q`; kohya keys unchanged."""
    if module.startswith("lora_"):
        return module
    module = module.removeprefix("base_model.model.")
    for prefix, kohya in _PEFT_PREFIXES.items():
        if module.startswith(prefix):
            if family == "sdxl" and kohya == "lora_te_":
                kohya = "lora_te1_"
            return kohya + module[len(prefix) :].replace(".", "_")
    return module.replace(".", "_")


# After diffusers renumbers the blocks: the original UNet's layer names -> diffusers' (kohya underscore form),
# applied in this order: whole layers at the start of a key, then block names, then parts of a block.
_SGM_LAYERS = {
    "input_blocks_0_0": "conv_in",
    "out_2": "conv_out",
    "time_embed_0": "time_embedding_linear_1",
    "time_embed_2": "time_embedding_linear_2",
    "label_emb_0_0": "add_embedding_linear_1",
    "label_emb_0_2": "add_embedding_linear_2",
}
_SGM_BLOCK_NAMES = {"input_blocks_": "down_blocks_", "middle_block_": "mid_block_", "output_blocks_": "up_blocks_"}
_SGM_PARTS = {
    "_in_layers_2": "_conv1",
    "_out_layers_3": "_conv2",
    "_emb_layers_1": "_time_emb_proj",
    "_skip_connection": "_conv_shortcut",
    "(samplers_0)_op": r"\1_conv",
}
_SGM_RENAMES = (
    *[(re.compile(rf"^lora_unet_{old}(?=\.)"), f"lora_unet_{new}") for old, new in _SGM_LAYERS.items()],
    *[(re.compile(rf"^lora_unet_{old}"), f"lora_unet_{new}") for old, new in _SGM_BLOCK_NAMES.items()],
    *[(re.compile(rf"{old}(?=\.)"), new) for old, new in _SGM_PARTS.items()],
)


def sgm_to_diffusers(name: str, state: dict[str, torch.Tensor], unet_config) -> dict[str, torch.Tensor]:
    """kohya's SDXL files name UNet layers after the original (SGM) UNet: diffusers renumbers the blocks for this
    checkpoint's UNet config, then the layer names are renamed to diffusers' own."""
    from diffusers.loaders.lora_conversion_utils import _maybe_map_sgm_blocks_to_diffusers

    try:
        state = _maybe_map_sgm_blocks_to_diffusers(dict(state), unet_config)
    except (ValueError, KeyError, IndexError) as exc:
        raise EngineError(f"LoRA {name}: its UNet keys are in a layout sdbot cannot map ({exc})") from None
    renamed = {}
    for key, value in state.items():
        if key.startswith("lora_unet_"):
            for pattern, repl in _SGM_RENAMES:
                key = pattern.sub(repl, key)
        renamed[key] = value
    return renamed


# --- the modules a pipeline offers -------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """One patchable layer: its module and which multiplier applies ("te" or "unet")."""

    part: str
    module: torch.nn.Module


def pipeline_targets(pipe) -> dict[str, Target]:
    """kohya key -> layer, for every Linear and Conv2d of the UNet and text encoder(s)."""
    sdxl = getattr(pipe, "text_encoder_2", None) is not None
    parts = [("unet", "lora_unet_", pipe.unet)]
    if sdxl:
        parts += [("te", "lora_te1_", pipe.text_encoder), ("te", "lora_te2_", pipe.text_encoder_2)]
    else:
        parts += [("te", "lora_te_", pipe.text_encoder)]
    targets: dict[str, Target] = {}
    for part, prefix, model in parts:
        for module_name, module in model.named_modules():
            if not isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)):
                continue
            if part == "te" and not module_name.startswith("text_model."):
                module_name = "text_model." + module_name  # transformers 5's CLIP has no `.text_model`
            targets[prefix + module_name.replace(".", "_")] = Target(part, module)
    return targets


# --- merging into a pipeline, and restoring ------------------------------------------------------------------


@dataclass(frozen=True)
class UsedNetwork:
    """A LoRA a job used: the name as typed (for `Lora hashes`) and its file's short hash."""

    name: str
    hash: str


@dataclass
class _Merged:
    key: tuple
    originals: dict[torch.nn.Module, torch.Tensor]
    used: list[UsedNetwork]


class LoraMerger:
    """Merges a job's LoRA set into the checkpoint's weights, remembering the originals.

    Weights stay merged while consecutive jobs use the same set (so a LoRA costs nothing per step), and are put
    back to the checkpoint's own values as soon as a job's set differs, before the next set is added: no job's
    pixels depend on an earlier job. Parsed files are kept in a small LRU cache.
    """

    def __init__(self, library, allow_pickle: bool, cache_size: int = 8) -> None:
        import weakref
        from collections import OrderedDict

        self.library = library
        self.allow_pickle = allow_pickle
        self.cache_size = cache_size
        self._parsed: OrderedDict[tuple, ParsedNetwork] = OrderedDict()
        self._merged: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # UNet module -> _Merged
        self.merges = 0  # counted for tests and benchmarks: a repeated set merges nothing

    def activate(self, pipe, family: str, tags) -> list[UsedNetwork]:
        """Make `pipe`'s weights the checkpoint's plus exactly `tags` (canonical order); return what was used.

        The set is the tags and the files' versions, so a file replaced on disk is merged again.
        """
        files = [self.library.lora(tag.name) for tag in tags]
        key = tuple((tag.key(), _version(file.path)) for tag, file in zip(tags, files))
        current = self._merged.get(pipe.unet)
        if current is not None and current.key == key:
            return current.used
        deltas, used = self._deltas(pipe, family, tags, files)  # every error happens here, before weights change
        self.restore(pipe)
        originals: dict[torch.nn.Module, torch.Tensor] = {}
        try:
            with torch.no_grad():
                for module, delta in deltas.items():
                    weight = weight_of(module)
                    originals[module] = weight.detach().clone()
                    weight.copy_((originals[module].float() + delta).to(weight.dtype))
        except BaseException:
            _put_back(originals)
            raise
        self._merged[pipe.unet] = _Merged(key, originals, used)
        if deltas:
            self.merges += 1
        return used

    def restore(self, pipe) -> None:
        """Put the checkpoint's own weights back."""
        merged = self._merged.pop(pipe.unet, None)
        if merged is not None:
            _put_back(merged.originals)

    def _deltas(self, pipe, family: str, tags, files) -> tuple[dict[torch.nn.Module, torch.Tensor], list[UsedNetwork]]:
        from engine.models.hashing import network_hash

        if not tags:
            return {}, []
        targets = pipeline_targets(pipe)
        totals: dict[torch.nn.Module, torch.Tensor] = {}
        used: list[UsedNetwork] = []
        for tag, file in zip(tags, files):
            network = self._parse(file, pipe.unet.config)
            _check_family(network, file.path, family)
            matched = [k for k in network.groups if k in targets]
            if not matched:
                example = next(iter(network.groups), "(no weights)")
                raise EngineError(
                    f"LoRA {file.name} ({file.path.name}) has no weights that match this checkpoint's layers "
                    f"(e.g. {example}); it is not a LoRA for this model"
                )
            if len(matched) < len(network.groups):
                log.warning(
                    "LoRA %s: %d of %d modules match nothing in this checkpoint",
                    file.name,
                    len(network.groups) - len(matched),
                    len(network.groups),
                )
            for module_key in matched:
                target = targets[module_key]
                multiplier = tag.te if target.part == "te" else tag.unet
                if multiplier == 0:
                    continue
                try:
                    delta = (
                        module_delta(
                            file.name, module_key, network.groups[module_key], weight_of(target.module), tag.dyn
                        )
                        * multiplier
                    )
                except RuntimeError as exc:  # factors whose shapes do not multiply
                    raise EngineError(
                        f"LoRA {file.name}: the weights of {module_key} do not fit together "
                        f"({str(exc).splitlines()[0][:160]})"
                    ) from None
                previous = totals.get(target.module)
                totals[target.module] = delta if previous is None else previous + delta
            shown = tag.name.replace(":", "").replace(",", "")
            if all(u.name != shown for u in used):
                used.append(UsedNetwork(shown, network_hash(file.path)))
        return totals, used

    def _parse(self, file, unet_config) -> ParsedNetwork:
        from engine.models.state_dict import read_state_dict
        from engine.networks.library import safetensors_metadata

        layout = (tuple(unet_config.block_out_channels), str(unet_config.layers_per_block))
        key = (str(file.path.resolve()), *_version(file.path), layout)
        if key in self._parsed:
            self._parsed.move_to_end(key)
            return self._parsed[key]
        state = read_state_dict(file.path, self.allow_pickle)
        network = parse_network(file.name, state, safetensors_metadata(file.path), unet_config)
        self._parsed[key] = network
        while len(self._parsed) > self.cache_size:
            self._parsed.popitem(last=False)
        return network


def _version(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns


def _check_family(network: ParsedNetwork, path: Path, family: str) -> None:
    mine = "sdxl" if network.family == "sdxl" else "sd"
    if mine != family:
        raise EngineError(
            f"LoRA {network.name} ({path.name}) is for {FAMILY_LABELS[network.family]}; this checkpoint is "
            f"{FAMILY_LABELS[family]}"
        )


def _put_back(originals: dict[torch.nn.Module, torch.Tensor]) -> None:
    with torch.no_grad():
        for module, weight in originals.items():
            weight_of(module).copy_(weight)


def weight_of(layer: torch.nn.Module) -> torch.Tensor:
    """The weight of a layer a LoRA changes (a Linear or a Conv2d: each has one)."""
    weight = layer.weight
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"{type(layer).__name__} has no weight tensor")
    return weight
