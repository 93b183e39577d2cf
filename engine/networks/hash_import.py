"""An imported infotext's LoRAs and embeddings, linked to this models dir by A1111's hashes.

An image made elsewhere says `<lora:add_detail:0.6>` and `Lora hashes: "add_detail: 1a2b3c4d5e6f"`; here the same
file may be called `more_details`. The hash finds it and the prompt's tag is renamed; a hash with no local file
(and no file of that name) is reported as missing, so the user knows what the import cannot reproduce.
"""

from __future__ import annotations

import re

from engine.infotext import Infotext, format_infotext, parse_infotext


def hash_pairs(value: str) -> list[tuple[str, str]]:
    """`"a: 1a2b, b: 3c4d"` -> [("a", "1a2b"), ("b", "3c4d")] (A1111 removes `,` and `:` from the names)."""
    pairs = []
    for item in value.split(","):
        name, sep, short = item.rpartition(":")
        if sep and name.strip() and short.strip():
            pairs.append((name.strip(), short.strip()))
    return pairs


def relink_networks(info: Infotext, library) -> tuple[Infotext, list[str]]:
    """`info` with its LoRA tags and embedding words renamed to the local files with the same hashes, and notes
    (renamed, missing) for the user."""
    prompt, negative = info.prompt, info.negative_prompt
    notes: list[str] = []
    local_loras = {f.name.lower() for f in library.loras()}
    for name, short in hash_pairs(info.params.get("Lora hashes", "")):
        found = library.lora_by_hash(short)
        if found is not None and found.name.lower() != name.lower():
            pattern = re.compile(r"(<(?:lora|lyco):)\s*" + re.escape(name) + r"\s*(?=[:>])", re.I)
            prompt, negative = _rename(pattern, found.name, prompt, negative)
            notes.append(f"LoRA {name} is {found.name} here (same hash {short})")
        elif found is None and name.lower() not in local_loras:
            notes.append(f"missing LoRA {name} (hash {short})")
    local_embeddings = {f.name.lower() for f in library.embeddings()}
    for name, short in hash_pairs(info.params.get("TI hashes", "")):
        found = library.embedding_by_hash(short)
        if found is not None and found.name.lower() != name.lower():
            pattern = re.compile(r"(?<!\w)" + re.escape(name) + r"(?!\w)", re.I)
            prompt, negative = _rename(pattern, found.name, prompt, negative)
            notes.append(f"embedding {name} is {found.name} here (same hash {short})")
        elif found is None and name.lower() not in local_embeddings:
            notes.append(f"missing embedding {name} (hash {short})")
    return Infotext(prompt, negative, dict(info.params)), notes


def relink_infotext(text: str, library) -> tuple[str, list[str]]:
    """The same on infotext text (what `/preset import` receives); text without LoRAs or embeddings is kept."""
    info = parse_infotext(text)
    if "Lora hashes" not in info.params and "TI hashes" not in info.params:
        return text, []
    linked, notes = relink_networks(info, library)
    if linked.prompt == info.prompt and linked.negative_prompt == info.negative_prompt:
        return text, notes
    return format_infotext(linked.prompt, linked.negative_prompt or "", linked.params), notes


def _rename(pattern: re.Pattern[str], local: str, prompt: str, negative: str | None) -> tuple[str, str | None]:
    """Each match of `pattern` becomes `local`, after what its first group (if any) matched: a LoRA tag's `<lora:`."""

    def repl(match: re.Match[str]) -> str:
        return (match.group(1) if pattern.groups else "") + local

    return pattern.sub(repl, prompt), None if negative is None else pattern.sub(repl, negative)
