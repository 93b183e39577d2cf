"""The config file: TOML, validated once at start into pydantic models, the only reader of the file.

A bad file stops with one line naming the file, the key, what is allowed and what was found. The engine gets a
frozen `EngineConfig`, so it never reads files of ours.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

from bot.errors import ConfigError
from engine.config import EngineConfig, Limits, RayConfig

if TYPE_CHECKING:
    from bot.services.image_policy import ImagePolicy

DEFAULT_CONFIG_NAME = "config.toml"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# [engine] holds the engine's settings (engine/config.py: EngineConfig, its Limits, and RayConfig's as ray_*):
# their names, types and defaults are the engine's, read from its dataclasses, so they live in one place. The file
# adds what a file needs: bounds and the allowed words.
_ENGINE_SOURCES = ((EngineConfig, ""), (Limits, ""), (RayConfig, "ray_"))
_NOT_IN_FILE = {"limits", "ray", "image_classifier", "max_side"}  # nested, [moderation]'s, or fixed
_RENAMED = {"ray_app_name": "ray_app"}
_CHOICES: dict[str, tuple[str, ...]] = {
    "device": ("auto", "cpu", "cuda"),
    "dtype": ("auto", "fp16", "bf16", "fp32"),
    "batch_mode": ("exact", "fast"),
    "backend": ("local", "ray"),
    "isolation": ("process", "thread"),
}
_BOUNDS: dict[str, dict[str, Any]] = {
    "vae_cache_size": dict(ge=0, le=64),
    "controlnet_cache_size": dict(ge=0, le=64),
    "max_controlnet_units": dict(ge=0, le=8),
    "checkpoint_cache_size": dict(ge=1, le=16),
    "max_steps": dict(ge=1, le=1000),
    "max_pixels": dict(ge=64 * 64, le=4096 * 4096),
    "max_batch": dict(ge=1, le=16),
    "max_prompt_chars": dict(ge=1, le=20000),
    "max_input_bytes": dict(ge=1024, le=512 * 2**20),  # img2img starts and inpaint masks
    "max_input_pixels": dict(ge=64 * 64, le=2**28),
    "max_queued_per_user": dict(ge=1, le=1000),
    "job_timeout_s": dict(gt=0, le=86400),
    "preview_every": dict(ge=0, le=1000),
    "threads": dict(ge=0, le=256),
    "batch_window_ms": dict(ge=0, le=1000),
    "ray_app": dict(pattern=r"^[A-Za-z0-9_-]{1,64}$"),
    "ray_replicas": dict(ge=1, le=1024),
    "ray_num_gpus": dict(ge=0, le=64),
    "ray_num_cpus": dict(ge=0, le=1024),
    "ray_max_retries": dict(ge=0, le=100),
    "ray_max_ongoing_requests": dict(ge=1, le=1000),
    "ray_start_timeout_s": dict(gt=0, le=86400),
}


def _engine_keys() -> dict[str, tuple[type, str]]:
    """[engine] key -> (the engine dataclass that holds it, its field name there), in the engine's order."""
    return {
        _RENAMED.get(prefix + f.name, prefix + f.name): (cls, f.name)
        for cls, prefix in _ENGINE_SOURCES
        for f in dataclasses.fields(cls)
        if f.name not in _NOT_IN_FILE
    }


def _engine_section() -> type[_Section]:
    fields: dict[str, Any] = {}
    for key, (cls, name) in _engine_keys().items():
        kind, default = typing.get_type_hints(cls)[name], getattr(cls(), name)
        if key in _CHOICES:
            kind = Literal[_CHOICES[key]]
        elif kind is Path:
            kind, default = str, str(default)
        elif kind == Path | None:  # a folder that may be unset: "" in the file
            kind, default = str, ""
        fields[key] = (Annotated[kind, Field(**_BOUNDS.get(key, {}))], default)
    return create_model("EngineSection", __base__=_Section, **fields)


if TYPE_CHECKING:

    class EngineSection(_Section):
        """What a type checker sees of [engine]: its keys are made at import from the engine's dataclasses."""

        models_dir: str

        def __init__(self, **values: Any) -> None: ...

        def __getattr__(self, name: str) -> Any: ...

else:
    EngineSection = _engine_section()


# Bounds that several keys share, each declared once.
_Ids = list[Annotated[int, Field(ge=0)]]  # Discord ids (snowflakes)
_Fraction = Annotated[float, Field(ge=0, le=1)]
_FewCalls = Annotated[int, Field(ge=1, le=50)]  # Discord API calls in a period
_UpToAMinute = Annotated[float, Field(gt=0, le=60)]  # seconds, above 0
_UpToAnHour = Annotated[float, Field(ge=0, le=3600)]  # seconds, 0 allowed
_UpToADay = Annotated[float, Field(gt=0, le=86400)]  # seconds, above 0


class DatabaseSection(_Section):
    url: str = ""
    max_presets_per_user: Annotated[int, Field(ge=1, le=1000)] = 50
    busy_timeout_ms: Annotated[int, Field(ge=0, le=600_000)] = 10_000
    journal_path: str = ""  # the command journal (bot/store/journal.py); "": beside the SQLite database


class DiscordSection(_Section):
    token_env: str = "DISCORD_TOKEN"
    api_base_url: str = "https://discord.com/api/v10"
    gateway_url: str = "wss://gateway.discord.gg/"
    guild_ids: _Ids = []
    command_sync: bool = True
    outputs_dir: str = "outputs"
    cooldown_s: _UpToAnHour = 0.0
    edits_per_channel: _FewCalls = 1
    edit_period_s: _UpToAMinute = 1.5
    api_calls_per_s: _FewCalls = 40
    preview_period_s: Annotated[float, Field(ge=1, le=120)] = 4.0
    token_lifetime_s: Annotated[float, Field(gt=0, le=900)] = 870.0
    shutdown_timeout_s: _UpToAnHour = 30.0
    post_retry_s: Annotated[float, Field(ge=0, le=86400)] = 900.0
    post_backoff_s: _UpToAMinute = 1.0
    upscale_upscaler: str = "Lanczos"  # the Upscale ×2 button: this upscaler, then img2img at upscale_strength
    upscale_strength: _Fraction = 0.3
    region_strength: _Fraction = 0.75  # Vary (Region): inpaint the region at this denoising strength
    outpaint_strength: _Fraction = 1.0  # Zoom Out and Pan: paint the new border at this denoising strength
    # Sharding (docs/scaling.md): 1 = one gateway connection; "auto" = Discord's recommended count; N shards.
    shards: int | Literal["auto"] = 1
    # The shards this process runs: a list or a range "FIRST-LAST"; empty = all of them.
    shard_ids: list[int] = []

    @field_validator("shards", mode="before")
    @classmethod
    def _shards(cls, value: Any) -> Any:
        if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 65536):
            return value
        raise ValueError('shards must be "auto" or a whole number from 1 to 65536')

    @field_validator("shard_ids", mode="before")
    @classmethod
    def _shard_ids(cls, value: Any, info: ValidationInfo) -> list[int]:
        if isinstance(value, str) and re.fullmatch(r"\d+-\d+", value.strip()):
            first, last = (int(x) for x in value.split("-"))
            if first > last:
                raise ValueError(f"the range {value!r} runs backwards; write it FIRST-LAST")
            value = list(range(first, last + 1))
        if not isinstance(value, list) or not all(isinstance(x, int) and not isinstance(x, bool) for x in value):
            raise ValueError('shard_ids must be a list of shard numbers ([0, 1]) or a range ("0-3")')
        if not value:
            return []
        shards = info.data.get("shards", 1)
        if not isinstance(shards, int):
            raise ValueError('shard_ids needs a number of shards (shards = N), not "auto"')
        if min(value) < 0 or max(value) >= shards or len(set(value)) != len(value):
            raise ValueError(f"shard_ids must be distinct shard numbers from 0 to {shards - 1} (shards = {shards})")
        return sorted(value)

    @property
    def sharded(self) -> bool:
        return self.shards != 1 or bool(self.shard_ids)


class ModerationSection(_Section):
    user_rate: Annotated[int, Field(ge=1, le=10000)] = 10
    user_period_s: _UpToADay = 60.0
    guild_rate: Annotated[int, Field(ge=1, le=100000)] = 60
    guild_period_s: _UpToADay = 60.0
    rate_wait_s: Annotated[float, Field(ge=0, le=10)] = 2.0
    max_queued_per_guild: Annotated[int, Field(ge=0, le=100000)] = 0
    max_grid_cells: Annotated[int, Field(ge=1, le=1000)] = 25  # cells in one X/Y/Z grid (/xyz, sdbot xyz)
    banned_users: _Ids = []
    # A local image-classification model folder ("": none); guilds in `auto` mode need one.
    image_classifier: str = ""
    unsafe_labels: list[Annotated[str, Field(min_length=1, max_length=100)]] = ["nsfw"]
    flag_above: _Fraction = 0.5
    block_above: _Fraction = 0.9

    @model_validator(mode="after")
    def _ordered(self) -> ModerationSection:
        if self.flag_above > self.block_above:
            raise ValueError(f"flag_above ({self.flag_above:g}) must not be above block_above ({self.block_above:g})")
        if not self.unsafe_labels:
            raise ValueError("unsafe_labels must name at least one of the classifier's labels")
        return self


class Settings(_Section):
    engine: EngineSection = EngineSection()
    database: DatabaseSection = DatabaseSection()
    discord: DiscordSection = DiscordSection()
    moderation: ModerationSection = ModerationSection()


class Config:
    """A validated config plus the directory its relative paths are resolved against."""

    def __init__(self, settings: Settings, base_dir: Path, source: Path | None) -> None:
        self.settings = settings
        self.base_dir = base_dir
        self.source = source

    def resolve(self, path: str) -> Path:
        p = Path(path).expanduser()
        return p if p.is_absolute() else (self.base_dir / p)

    @property
    def models_dir(self) -> Path:
        return self.resolve(self.settings.engine.models_dir)

    def engine_config(self) -> EngineConfig:
        values = self.settings.engine.model_dump()
        parts: dict[type, dict[str, Any]] = {cls: {} for cls, _ in _ENGINE_SOURCES}
        for key, (cls, name) in _engine_keys().items():
            parts[cls][name] = values[key]
        annotators = values["control_annotators"].strip()
        return EngineConfig(
            **{
                **parts[EngineConfig],
                "models_dir": self.models_dir,
                "control_annotators": self.resolve(annotators) if annotators else None,
            },
            limits=Limits(**parts[Limits]),
            ray=RayConfig(**parts[RayConfig]),
            image_classifier=self.image_classifier,
        )

    @property
    def image_classifier(self) -> Path | None:
        """`[moderation] image_classifier`, resolved against the config's folder; None when not set."""
        path = self.settings.moderation.image_classifier.strip()
        return self.resolve(path) if path else None

    def image_policy(self) -> ImagePolicy | None:
        """What scores mean for posting (bot/services/image_policy.py); None without a classifier."""
        from bot.services.image_policy import ImagePolicy, Thresholds  # bot.services imports this module

        m = self.settings.moderation
        if self.image_classifier is None:
            return None
        return ImagePolicy(tuple(m.unsafe_labels), Thresholds(m.flag_above, m.block_above))

    @property
    def outputs_dir(self) -> Path:
        return self.resolve(self.settings.discord.outputs_dir)

    @property
    def database_url(self) -> str:
        """`SDBOT_DATABASE_URL` wins over the file; default: `sdbot.db` beside the config."""
        url = os.environ.get("SDBOT_DATABASE_URL") or self.settings.database.url
        if url:
            return url
        return f"sqlite+aiosqlite:///{self.base_dir / 'sdbot.db'}"

    @property
    def journal_path(self) -> Path:
        """The command journal: `[database] journal_path`, else `<name>-journal.db` beside a SQLite database file,
        else `sdbot-journal.db` beside the config (PostgreSQL, in-memory SQLite); with `shard_ids`, one per process
        (`sdbot-journal-shards-0-1.db`)."""
        if self.settings.database.journal_path:
            return self.resolve(self.settings.database.journal_path)
        from sqlalchemy.engine import make_url

        try:
            url = make_url(self.database_url)
        except Exception:
            url = None
        # Processes sharing the shards (each its `shard_ids`) share the config dir: each gets a journal of its own.
        ids = self.settings.discord.shard_ids
        suffix = f"-shards-{'-'.join(str(i) for i in ids)}" if ids else ""
        if url is not None and url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
            db = self.resolve(url.database)
            return db.with_name(f"{db.stem}-journal{suffix}.db")
        return self.base_dir / f"sdbot-journal{suffix}.db"


def _describe(err: ErrorDetails) -> str:
    key = ".".join(str(p) for p in err["loc"])
    section, _, rest = key.partition(".")
    where = f"[{section}] {rest}" if rest else key
    found = err.get("input")
    if err["type"] == "extra_forbidden":
        return f"unknown key {where}; allowed keys are documented in config.example.toml"
    ctx = err.get("ctx") or {}
    if err["type"] == "value_error" and not rest:  # a check across keys (model_validator): its message names them
        return f"[{section}] {ctx.get('error', err['msg'])}"
    if err["type"] == "value_error":  # our validators' messages, as written
        return f"{where}: {ctx.get('error', err['msg'])}, got {found!r}"
    if err["type"] == "literal_error":
        allowed = ctx.get("expected", "")
        return f"{where} must be one of {allowed}, got {found!r}"
    return f"{where}: {err['msg'].lower()}, got {found!r}"


def parse_settings(data: dict[str, Any], source: str) -> Settings:
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {_describe(exc.errors()[0])}") from None


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Load `path`, else `./config.toml` when present, else the embedded defaults (relative to the cwd)."""
    if path is None:
        candidate = Path(DEFAULT_CONFIG_NAME)
        if not candidate.exists():
            return Config(Settings(), Path.cwd(), None)
        path = candidate
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{p}: config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: cannot read config file ({exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML ({exc})") from None
    return Config(parse_settings(data, str(p)), p.resolve().parent, p)
