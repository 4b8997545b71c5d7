"""Pure unit tests of runtime.text (escaping, masking) and runtime.jsonable (valid JSON)."""

from __future__ import annotations

import json
import math

from hypothesis import given
from hypothesis import strategies as st
from rich.console import Console

from runtime.jsonable import TOO_DEEP, dumps
from runtime.text import SECRET_MASK, Masker, markup_safe, secret_texts, secret_values, visible


def test_visible_escapes_every_control_and_bidi_character() -> None:
    hostile = "a\x1b[2J\x1b]52;c;aGk=\x07b\rc\nd\te\x7f\x9b\u202eevil\u2066\ud800"
    shown = visible(hostile)
    assert shown == (
        "a\\x1b[2J\\x1b]52;c;aGk=\\x07b\\rc\\nd\\te\\x7f\\x9b\\u202eevil\\u2066\\ud800"
    )
    shown.encode("utf-8")  # no lone surrogate left: printable on any terminal


@given(st.text())
def test_visible_leaves_nothing_a_terminal_interprets(text: str) -> None:
    shown = visible(text)
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in shown)
    assert not any(0xD800 <= ord(c) <= 0xDFFF for c in shown)
    assert "\u202e" not in shown


def test_visible_keeps_ordinary_text() -> None:
    assert visible("héllo wörld 日本 🙂 [bold]x[/]") == "héllo wörld 日本 🙂 [bold]x[/]"


def test_markup_is_printed_not_interpreted() -> None:
    console = Console(record=True, width=200, color_system=None)
    for hostile in ("[/]", "[bold red]CRITICAL", "[link=https://evil.example]x[/link]", "\\[x]"):
        console.print(markup_safe(hostile))
    text = console.export_text()
    assert "[/]" in text and "[bold red]CRITICAL" in text
    assert "[link=https://evil.example]x[/link]" in text


def test_masking_touches_every_string_of_plugin_data_and_loses_no_key() -> None:
    mask = Masker(["k"])
    value = {
        "ey": 0,
        "key": "my key is k",
        "nested": [{"k": "kk"}, 5, None, True],
        "k": 1.5,
        "***": 2,
    }
    assert mask(value) == {
        "ey": 0,
        "***ey": "my ***ey is ***",
        "nested": [{"***": "******"}, 5, None, True],
        "***": 2,
        "***#2": 1.5,
    }
    assert value["key"] == "my key is k"  # a copy: the input is left alone


def test_a_one_character_secret_cannot_corrupt_a_report() -> None:
    mask = Masker(['"'])
    report = {"outcome": "ok", "logs": [{"level": "info", "message": 'say "hi"'}]}
    report["logs"] = [
        {"level": "info", "message": mask.text(line["message"])} for line in report["logs"]
    ]  # type: ignore[index]
    assert json.loads(dumps(report))["logs"][0]["message"] == f"say {SECRET_MASK}hi{SECRET_MASK}"


def test_longest_secret_first_and_regex_characters_are_literal() -> None:
    mask = Masker(["ab", "abc.*", "("])
    assert mask.text("xabc.*y ab (") == f"x{SECRET_MASK}y {SECRET_MASK} {SECRET_MASK}"
    assert mask.text("abcdef") == f"{SECRET_MASK}cdef"


def test_masking_any_depth_never_raises() -> None:
    deep: object = "secret"
    for _ in range(100_000):
        deep = [deep]
    masked = Masker(["secret"])(deep)
    for _ in range(100_000):
        masked = masked[0]  # type: ignore[index]
    assert masked == SECRET_MASK


@given(
    st.text(min_size=1, max_size=3),
    st.recursive(st.text(), lambda c: st.lists(c) | st.dictionaries(st.text(), c)),
)
def test_masked_value_never_contains_the_secret_in_its_strings(secret: str, value: object) -> None:
    masked = Masker([secret])(value)

    def strings(v: object) -> list[str]:
        if isinstance(v, str):
            return [v]
        if isinstance(v, dict):
            return [s for x in v.values() for s in strings(x)]
        if isinstance(v, list):
            return [s for x in v for s in strings(x)]
        return []

    for text in strings(masked):
        # What is left between masks holds no occurrence (a mask's own '*' may border a
        # character to spell a secret such as 'a*': that is the mask, not the secret).
        assert all(secret not in part for part in text.split(SECRET_MASK)) or "*" in secret


def test_secret_texts_of_every_setting_type() -> None:
    texts = secret_texts(["tok", 12345, True, {"user": "u1", "pw": "p@ss"}, "", None])
    assert "tok" in texts and "12345" in texts and "true" in texts
    assert "p@ss" in texts and "u1" in texts and '{"user":"u1","pw":"p@ss"}' in texts
    assert "" not in texts


def test_settings_the_schema_does_not_declare_are_secret() -> None:
    assert secret_values({"a": False, "b": True}, {"a": "shown", "b": "hidden", "gone": "old"}) == [
        "hidden",
        "old",
    ]


def test_dumps_is_valid_json_whatever_the_value() -> None:
    deep: object = 1
    for _ in range(10_000):
        deep = [deep]
    value = {
        "nan": math.nan,
        "inf": [math.inf, -math.inf],
        "big": 10**5000,
        "deep": deep,
        "surrogate": "\ud800",
        "set": {1, 2},
    }
    text = dumps(value)
    parsed = json.loads(text, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
    assert parsed["nan"] is None and parsed["inf"] == [None, None]
    assert parsed["big"].startswith("<integer of")
    assert TOO_DEEP in text


def test_serve_log_lines_escape_plugin_text() -> None:
    import logging

    from runtime.logs import JsonFormatter, TextFormatter

    record = logging.LogRecord(
        "plugin_runtime",
        logging.ERROR,
        __file__,
        1,
        "plugin %s: %s",
        ("p\x1b]52;c;x\x07", "a\nb"),
        None,
    )
    line = TextFormatter("%(levelname)s %(message)s").format(record)
    assert line == "ERROR plugin p\\x1b]52;c;x\\x07: a\\nb"
    as_json = JsonFormatter().format(record)
    assert "\x1b" not in as_json and "\n" not in as_json
    assert json.loads(as_json)["message"] == "plugin p\x1b]52;c;x\x07: a\nb"
