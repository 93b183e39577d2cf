"""Discord's OpenAPI spec: finding it, matching request paths to its route templates, validating bodies.

The spec (Discord's own `openapi.json`, OpenAPI 3.1 = JSON Schema 2020-12) is read once per process; each
(route, method, content type) gets one cached `Draft202012Validator`. Discord's snowflakes are strings in the
spec, but Discord also takes a non-negative integer (discord.py 2.7 sends ints for `attachments[].id` and
`recipient_id`), so `SnowflakeType` is widened to exactly that and nothing more.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import threading
from collections import defaultdict
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema

SPEC_ENV = "SDBOT_DISCORD_OPENAPI"
# Kept in the repository (gzipped, MIT licence beside it; spec/README.md says where it came from), so a
# fresh clone tests on its own. `$SDBOT_DISCORD_OPENAPI` overrides it with another copy (plain or .gz).
BUNDLED_SPEC = Path(__file__).resolve().parent / "spec" / "openapi.json.gz"

_SNOWFLAKE_PATTERN = "^(0|[1-9][0-9]*)$"
_METHODS = ("get", "put", "post", "patch", "delete")


def find_spec() -> Path:
    """The spec's path: `$SDBOT_DISCORD_OPENAPI`, else the copy in `tests/discord_standin/spec/`."""
    env = os.environ.get(SPEC_ENV)
    path = Path(env) if env else BUNDLED_SPEC
    if not path.is_file():
        where = f"{SPEC_ENV}={env!r}" if env else str(BUNDLED_SPEC)
        raise FileNotFoundError(f"Discord's OpenAPI spec not found: {where} is not a file")
    return path


_load_lock = threading.Lock()


@lru_cache(maxsize=4)
def _load(path: str) -> dict[str, Any]:
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as fh:
        spec = json.load(fh)
    schemas = spec["components"]["schemas"]
    original = schemas.get("SnowflakeType") or {"type": "string", "pattern": _SNOWFLAKE_PATTERN, "format": "snowflake"}
    schemas["SnowflakeType"] = {"anyOf": [original, {"type": "integer", "minimum": 0}]}
    return spec


def load_spec(path: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """The parsed spec (cached per path), with `SnowflakeType` widened to accept non-negative integers."""
    with _load_lock:
        return _load(str(Path(path) if path is not None else find_spec()))


@dataclass(frozen=True)
class RouteTemplate:
    template: str  # as the spec writes it, e.g. /channels/{channel_id}/messages/{message_id}
    regex: re.Pattern[str]
    params: tuple[str, ...]
    literal_segments: int
    methods: frozenset[str]


class Spec:
    """Route matching and request-body validation over one loaded spec. Build with `Spec.get()`."""

    _instances: dict[str, Spec] = {}
    _instances_lock = threading.Lock()

    def __init__(self, spec: dict[str, Any]) -> None:
        self.raw = spec
        self._validators: dict[tuple[str, str, str], jsonschema.Draft202012Validator | None] = {}
        self._lock = threading.Lock()
        routes = []
        for template, item in spec["paths"].items():
            params: list[str] = []
            parts = []
            literals = 0
            for seg in template.strip("/").split("/"):
                m = re.fullmatch(r"\{(\w+)\}", seg)
                if m:
                    params.append(m.group(1))
                    parts.append(f"(?P<{m.group(1)}>[^/]+)")
                else:
                    literals += 1
                    parts.append(re.escape(seg))
            regex = re.compile("^/" + "/".join(parts) + "/?$")
            methods = frozenset(k for k in item if k in _METHODS)
            routes.append(RouteTemplate(template, regex, tuple(params), literals, methods))
        # most literal segments first, so /users/@me wins over /users/{user_id}
        routes.sort(key=lambda r: (-r.literal_segments, -len(r.template)))
        self.routes = routes

    @classmethod
    def get(cls, path: str | os.PathLike[str] | None = None) -> Spec:
        key = str(Path(path) if path is not None else find_spec())
        with cls._instances_lock:
            inst = cls._instances.get(key)
            if inst is None:
                inst = cls._instances[key] = cls(load_spec(key))
            return inst

    def match(self, path: str, method: str | None = None) -> tuple[str, dict[str, str]] | None:
        """(template, path params) for a path below the API base (`/channels/1/messages`), or None.
        Prefers a template that has `method`; falls back to any template matching the path."""
        fallback = None
        for route in self.routes:
            m = route.regex.match(path)
            if not m:
                continue
            if method is None or method.lower() in route.methods:
                return route.template, m.groupdict()
            if fallback is None:
                fallback = (route.template, m.groupdict())
        return fallback

    def has_request_body(self, template: str, method: str) -> bool:
        op = self.raw["paths"].get(template, {}).get(method.lower(), {})
        return bool(op.get("requestBody", {}).get("content"))

    def validator(self, template: str, method: str, content_type: str = "application/json"):
        """The cached validator of an operation's request body, or None if the spec gives it no such body."""
        key = (template, method.lower(), content_type)
        with self._lock:
            if key in self._validators:
                return self._validators[key]
            op = self.raw["paths"].get(template, {}).get(method.lower(), {})
            content = op.get("requestBody", {}).get("content", {})
            validator = None
            if content_type in content:
                ptr = (
                    "#/paths/" + template.replace("~", "~0").replace("/", "~1") + f"/{method.lower()}"
                    "/requestBody/content/" + content_type.replace("/", "~1") + "/schema"
                )
                validator = jsonschema.Draft202012Validator({**self.raw, "$ref": ptr})
            self._validators[key] = validator
            return validator

    def validate(self, template: str, method: str, body: Any) -> list[dict[str, Any]]:
        """Discord-style field errors for `body` against the operation's JSON request schema ([] = accepted)."""
        validator = self.validator(template, method)
        if validator is None:
            return []
        found: list[dict[str, Any]] = []
        for err in validator.iter_errors(body):
            for leaf in _leaf_errors(err):
                found.append(_describe(leaf))
        return found


def _branch_mismatch(errors: list[jsonschema.ValidationError]) -> bool:
    """A union branch that is for another kind of value: wrong type of the whole, or wrong discriminator."""
    for e in errors:
        rel = list(e.relative_path)
        if e.validator == "type" and not rel:
            return True
        if e.validator in ("const", "enum") and len(rel) == 1:
            return True
    return False


def _leaf_errors(err: jsonschema.ValidationError) -> list[jsonschema.ValidationError]:
    """Descend anyOf/oneOf failures into the branch that was meant (the one with the fewest errors)."""
    if err.validator not in ("anyOf", "oneOf") or not err.context:
        return [err]
    branches: dict[Any, list[jsonschema.ValidationError]] = defaultdict(list)
    for c in err.context:
        branches[c.relative_schema_path[0]].append(c)
    candidates = [b for b in branches.values() if not _branch_mismatch(b)] or list(branches.values())
    scored = []
    for branch in candidates:
        leaves = [leaf for c in branch for leaf in _leaf_errors(c)]
        depth = max(len(leaf.absolute_path) for leaf in leaves)
        scored.append((len(leaves), -depth, leaves))
    scored.sort(key=lambda s: (s[0], s[1]))
    return scored[0][2]


def _describe(err: jsonschema.ValidationError) -> dict[str, Any]:
    path = [str(p) for p in err.absolute_path]
    schema = err.schema if isinstance(err.schema, dict) else {}
    v, val = err.validator, err.validator_value
    if v == "required":
        missing = [k for k in val if not isinstance(err.instance, dict) or k not in err.instance]
        path = path + missing[:1]
        code, message = "BASE_TYPE_REQUIRED", "This field is required"
    elif v in ("maxItems", "maxLength", "minItems", "minLength"):
        lo = schema.get("minLength", schema.get("minItems"))
        hi = schema.get("maxLength", schema.get("maxItems"))
        if lo is not None and hi is not None:
            code, message = "BASE_TYPE_BAD_LENGTH", f"Must be between {lo} and {hi} in length."
        elif v.startswith("max"):
            code, message = "BASE_TYPE_MAX_LENGTH", f"Must be {val} or fewer in length."
        else:
            code, message = "BASE_TYPE_MIN_LENGTH", f"Must be {val} or more in length."
    elif v in ("maximum", "exclusiveMaximum"):
        code, message = "NUMBER_TYPE_MAX", f"int value should be less than or equal to {val}."
    elif v in ("minimum", "exclusiveMinimum"):
        code, message = "NUMBER_TYPE_MIN", f"int value should be greater than or equal to {val}."
    elif v in ("enum", "const"):
        choices = val if v == "enum" else [val]
        code, message = "BASE_TYPE_CHOICES", f"Value must be one of {set(choices)!r}."
    elif v == "type":
        code, message = "BASE_TYPE_BAD_TYPE", f"Must be of type {val}."
    elif v == "pattern":
        code, message = "STRING_TYPE_REGEX", "String value did not match validation regex."
    else:
        code, message = "BASE_TYPE_INVALID", err.message[:200]
    return {"path": path, "code": code, "message": message, "detail": err.message[:300]}


def discord_error_tree(errors: list[dict[str, Any]]) -> dict[str, Any]:
    """Nest field errors as Discord does: {"data": {"choices": {"_errors": [{"code", "message"}]}}}."""
    tree: dict[str, Any] = {}
    for e in errors:
        node = tree
        for key in e["path"]:
            node = node.setdefault(key, {})
        node.setdefault("_errors", []).append({"code": e["code"], "message": e["message"]})
    return tree
