"""The file hashes A1111 writes in infotexts, computed once per file version (path, size, mtime).

- Model and VAE hash: the whole file's sha256 (first 10 hex digits in the infotext).
- TI hashes: the whole file's sha256 (first 12).
- Lora hashes: A1111's "addnet" hash for safetensors, the sha256 of the tensor data only (the bytes after the
  8-byte header length and the JSON header), so editing a file's metadata keeps its hash; the whole file's
  sha256 for any other format (first 12).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

_cache: dict[tuple[str, int, float, bool], str] = {}


def sha256_hex(path: Path, *, tensor_data_only: bool = False) -> str:
    """The full hex sha256 of `path`; `tensor_data_only` skips a safetensors header (A1111's addnet hash)."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime, tensor_data_only)
    if key not in _cache:
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            if tensor_data_only:
                header = int.from_bytes(fh.read(8), "little")
                fh.seek(8 + header)
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        _cache[key] = digest.hexdigest()
    return _cache[key]


def network_hash(path: Path) -> str:
    """A LoRA's short hash as A1111 writes it in `Lora hashes`."""
    return sha256_hex(path, tensor_data_only=path.suffix.lower() == ".safetensors")[:12]


def embedding_hash(path: Path) -> str:
    """An embedding's short hash as A1111 writes it in `TI hashes`."""
    return sha256_hex(path)[:12]
