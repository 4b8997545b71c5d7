"""Plugin-produced text made safe to show, and secrets masked in it. Pure functions, one home:

- `visible(text)`: control characters (C0, DEL, C1), lone surrogates and the bidirectional
  overrides are replaced by a visible escape (`\\x1b`, `\\n`, `\\u202e`), so a plugin's text can
  neither drive a terminal (clear the screen, forge a line, set the clipboard with OSC 52) nor
  reorder what the operator reads. Used by every terminal output and, in JavaScript, by the
  status page.
- `markup_safe(value)`: `visible` plus rich markup escaped, for text printed through rich.
- `mask_secrets(value, secrets)`: every occurrence of a secret value inside the strings of a
  plugin-produced value (log and error messages, results, fetch URLs) replaced by `***`.

Masking is applied to plugin data only, never to the keys or text of a report the runtime writes
around it, so a secret of any length (one character included) cannot corrupt that report.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from rich.markup import escape as _rich_escape

SECRET_MASK = "***"

# C0 controls (newline and tab too: one log line must stay one line), DEL, C1 controls, lone
# surrogates (unencodable: printing one would raise), and the bidi embeddings/overrides/isolates
# and marks that reorder displayed text ("Trojan Source").
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_char(match: re.Match[str]) -> str:
    char = match.group()
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def visible(value: Any) -> str:
    """`str(value)` with every unsafe character replaced by a visible escape."""
    text = value if isinstance(value, str) else str(value)
    return _UNSAFE.sub(_escape_char, text)


def markup_safe(value: Any) -> str:
    """`visible(value)` escaped for rich markup: printed as is, never interpreted."""
    return _rich_escape(visible(value))


# -- secrets ------------------------------------------------------------------------------------


def secret_texts(values: Iterable[Any]) -> list[str]:
    """The strings to mask for these secret setting values: a string as is, a number or boolean
    as it prints, a JSON value as its compact JSON and each string inside it. Empty strings are
    dropped (there is nothing to hide). Longest first, so a secret containing another is masked
    whole."""
    found: set[str] = set()
    for value in values:
        if value is None:
            continue
        if isinstance(value, str):
            found.add(value)
        elif isinstance(value, bool | int | float):
            found.add(json.dumps(value) if isinstance(value, bool) else str(value))
        else:
            try:
                found.add(json.dumps(value, separators=(",", ":")))
                found.add(json.dumps(value))
            except (TypeError, ValueError, RecursionError):
                pass
            found.update(_strings_in(value))
    found.discard("")
    return sorted(found, key=lambda s: (-len(s), s))


def _strings_in(value: Any) -> list[str]:
    out: list[str] = []
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            out.append(item)
        elif isinstance(item, Mapping):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return out


def secret_values(schema_secret: Mapping[str, bool], settings: Mapping[str, Any]) -> list[str]:
    """The texts to mask for a config: the values of its secret settings (`schema_secret` maps
    each declared setting to whether it is secret). A stored setting the schema no longer
    declares is treated as secret: nothing says it is safe to show."""
    return secret_texts(v for k, v in settings.items() if schema_secret.get(k, True))


class Masker:
    """`mask_secrets` with its pattern compiled once, for many values."""

    def __init__(self, secrets: Collection[str]) -> None:
        wanted = sorted({s for s in secrets if isinstance(s, str) and s}, key=lambda s: -len(s))
        self._pattern = re.compile("|".join(map(re.escape, wanted))) if wanted else None

    def text(self, value: str) -> str:
        return self._pattern.sub(SECRET_MASK, value) if self._pattern is not None else value

    def fields(self, record: Any) -> Any:
        """A record the runtime wrote around plugin text (a run's error: type, message,
        traceback): its own keys kept, its values masked. None stays None."""
        if not isinstance(record, Mapping):
            return self(record)
        return {key: self(value) for key, value in record.items()}

    def _masked_keys(self, mapping: Mapping[Any, Any]) -> dict[Any, Any]:
        out: dict[Any, Any] = {}
        renamed: list[tuple[str, Any]] = []
        for key, value in mapping.items():
            masked = self.text(key) if isinstance(key, str) else key
            if masked == key:
                out[key] = value
            else:
                renamed.append((masked, value))
        for masked, value in renamed:  # after the untouched keys, so those keep their names
            name, n = masked, 1
            while name in out:
                n += 1
                name = f"{masked}#{n}"
            out[name] = value
        return out

    def __call__(self, value: Any) -> Any:
        """A copy of `value` (plugin data) with secrets masked in every string, the keys of its
        mappings included; a key that masking would merge with another gets a `#2`, `#3`...
        suffix, so nothing is lost. Walks iteratively: any depth, never raises."""
        if self._pattern is None:
            return value
        root: list[Any] = [value]
        stack: list[tuple[Any, Any]] = [(root, 0)]
        while stack:
            parent, key = stack.pop()
            item = parent[key]
            if isinstance(item, str):
                parent[key] = self.text(item)
            elif isinstance(item, Mapping):
                copy = self._masked_keys(item)
                parent[key] = copy
                stack.extend((copy, k) for k in copy)
            elif isinstance(item, list | tuple):
                items = list(item)
                parent[key] = items
                stack.extend((items, i) for i in range(len(items)))
        return root[0]


def mask_secrets(value: Any, secrets: Collection[str]) -> Any:
    """`value` with every secret text replaced by `***` in its strings; see `Masker`."""
    return Masker(secrets)(value)
