"""sdbot's image engine: diffusers behind an A1111-faithful request, no Discord and no SQL."""

import os

__version__ = "0.1.0"

# The engine never downloads: every model, config and tokenizer is local (offline by design, not by accident).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
