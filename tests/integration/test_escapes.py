"""Layer 1 under attack: restricted plugins trying every RestrictedPython escape class that
SECURITY.md lists. Each payload returns what it would have stolen; every run must end in
`bad_plugin` (refused at load, naming the line) or `error` (refused at run time), and never in the
payload's result. Plugins are real directories (plugin.json + main.py) run in the real sandbox.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from sandbox import RunReport, RunRequest, Sandbox, load_plugin
from sandbox.manifest import Limits

LIMITS = Limits(timeout_s=10.0, cpu_s=5.0, memory_mb=256)


def run_plugin(sb: Sandbox, directory: Path, source: str, **manifest: object) -> RunReport:
    directory.mkdir(parents=True, exist_ok=True)
    data = {"name": "attacker", "version": "1.0.0", "main": "main.py", **manifest}
    (directory / "plugin.json").write_text(json.dumps(data))
    (directory / "main.py").write_text(textwrap.dedent(source).lstrip())
    plugin = load_plugin(directory)
    return sb.run(RunRequest(plugin=plugin, task="run_every_minute", limits=LIMITS))


# id -> (plugin source, the outcome it must end in). Each payload returns its loot on success.
ATTACKS: dict[str, tuple[str, str]] = {
    # -- format strings: str.format walks attributes without the guard -----------------------
    "format-method": (
        """
        def run_every_minute(meta):
            return "{0.__class__.__mro__}".format(meta)
        """,
        "error",
    ),
    "format-map": (
        """
        def run_every_minute(meta):
            return "{m._channel}".format_map({"m": meta})
        """,
        "error",
    ),
    "str-format-unbound": (
        """
        def run_every_minute(meta):
            return str.format("{0._channel}", meta)
        """,
        "error",
    ),
    "getattr-format": (
        """
        def run_every_minute(meta):
            return getattr("{0._channel}", "format")(meta)
        """,
        "error",
    ),
    "str-subclass-format": (
        """
        class S(str):
            pass

        def run_every_minute(meta):
            return S.format("{0._channel}", meta)
        """,
        "error",
    ),
    "str-subclass-instance-format": (
        """
        class S(str):
            pass

        def run_every_minute(meta):
            return S("{0._channel}").format(meta)
        """,
        "error",
    ),
    "userstring-format": (
        """
        import collections

        def run_every_minute(meta):
            return str(collections.UserString("{0.fetch.__globals__}").format(meta))
        """,
        "error",
    ),
    "userstring-format-map": (
        """
        import collections

        def run_every_minute(meta):
            return str(collections.UserString("{m._channel}").format_map({"m": meta}))
        """,
        "error",
    ),
    "string-formatter": (
        """
        import string

        def run_every_minute(meta):
            return string.Formatter().format("{0._channel}", meta)
        """,
        "error",
    ),
    "from-string-import-formatter": (
        """
        from string import Formatter

        def run_every_minute(meta):
            return Formatter().format("{0._channel}", meta)
        """,
        "bad_plugin",
    ),
    "string-template-walk": (
        """
        import string

        class Walker(string.Template):
            idpattern = r"[a-z_.]+"

        def run_every_minute(meta):
            # Template looks the whole name up in the mapping; it never walks attributes.
            return Walker("$m._channel").substitute(m=meta)
        """,
        "error",
    ),
    # -- generator, coroutine and function internals: frames lead to real globals ------------
    "generator-frame": (
        """
        def run_every_minute(meta):
            g = (x for x in [1])
            return str(g.gi_frame.f_back.f_globals)
        """,
        "bad_plugin",
    ),
    "generator-frame-getattr": (
        """
        def gen():
            yield 1

        def run_every_minute(meta):
            frame = getattr(gen(), "gi_frame")
            return str(getattr(getattr(frame, "f_back"), "f_globals"))
        """,
        "error",
    ),
    "generator-code": (
        """
        def gen():
            yield 1

        def run_every_minute(meta):
            return str(gen().gi_code)
        """,
        "bad_plugin",
    ),
    "coroutine": (
        """
        async def coro():
            return 1

        def run_every_minute(meta):
            return str(coro().cr_frame)
        """,
        "bad_plugin",
    ),
    "function-globals": (
        """
        def run_every_minute(meta):
            return str(run_every_minute.__globals__)
        """,
        "bad_plugin",
    ),
    "function-globals-getattr": (
        """
        def run_every_minute(meta):
            return str(getattr(run_every_minute, "__glob" + "als__"))
        """,
        "error",
    ),
    "traceback-frame": (
        """
        def run_every_minute(meta):
            try:
                1 / 0
            except ZeroDivisionError as exc:
                return str(exc.__traceback__.tb_frame.f_globals)
        """,
        "bad_plugin",
    ),
    "bound-method-self": (
        """
        def run_every_minute(meta):
            return str(getattr(meta.logger.info, "__self__"))
        """,
        "error",
    ),
    # -- __subclasses__ and friends: walking the class graph to something dangerous ----------
    "subclasses": (
        """
        def run_every_minute(meta):
            return [c.__name__ for c in ().__class__.__bases__[0].__subclasses__()]
        """,
        "bad_plugin",
    ),
    "class-by-concatenation": (
        """
        def run_every_minute(meta):
            return str(getattr(getattr((), "__cl" + "ass__"), "__ba" + "ses__"))
        """,
        "error",
    ),
    "mro-to-object-subclasses": (
        """
        def run_every_minute(meta):
            base = SecurityError.mro()[-1]
            return [str(c) for c in getattr(base, "__subclasses__")()]
        """,
        "error",
    ),
    "type-builtin": (
        """
        def run_every_minute(meta):
            return str(vars(type(meta)))
        """,
        "error",
    ),
    "private-attribute-of-meta": (
        """
        def run_every_minute(meta):
            return str(meta._channel)
        """,
        "error",
    ),
    "hasattr-probe": (
        """
        def run_every_minute(meta):
            if hasattr(meta, "_channel"):
                return "hasattr saw a private name"
            raise ValueError("hasattr refused the private name")
        """,
        "error",
    ),
    # -- try/except*: CPython 3.11/3.12 type confusion in except* handlers --------------------
    "try-except-star": (
        """
        def run_every_minute(meta):
            try:
                raise ValueError("x")
            except* ValueError as group:
                return str(group)
        """,
        "bad_plugin",
    ),
    # -- shadowing the guard names that the transformed code calls ---------------------------
    "assign-guard": (
        """
        _getattr_ = lambda obj, name: obj

        def run_every_minute(meta):
            return str(meta._channel)
        """,
        "bad_plugin",
    ),
    "import-as-guard": (
        """
        from json import dumps as _getiter_

        def run_every_minute(meta):
            return "guard shadowed"
        """,
        "bad_plugin",
    ),
    "argument-named-guard": (
        """
        def run_every_minute(meta, _getattr_=getattr):
            return "guard shadowed"
        """,
        "bad_plugin",
    ),
    "class-attribute-guard": (
        """
        class A:
            _write_ = None

        def run_every_minute(meta):
            return "guard shadowed"
        """,
        "bad_plugin",
    ),
    "builtins-name": (
        """
        def run_every_minute(meta):
            return str(__builtins__)
        """,
        "bad_plugin",
    ),
    "rebinding-getattr-is-harmless": (
        """
        getattr = lambda obj, name: obj

        def run_every_minute(meta):
            x = getattr(meta, "__class__")  # the plugin's own function: no walk
            return str(x.__subclasses__())
        """,
        "bad_plugin",
    ),
    # -- imports: only allowlisted pure modules, each a view without submodules --------------
    "dunder-import": (
        """
        def run_every_minute(meta):
            return str(__import__("os").environ)
        """,
        "bad_plugin",
    ),
    "import-os": (
        """
        import os

        def run_every_minute(meta):
            return dict(os.environ)
        """,
        "bad_plugin",
    ),
    "import-inside-function": (
        """
        def run_every_minute(meta):
            import subprocess
            return subprocess.check_output(["id"])
        """,
        "bad_plugin",
    ),
    "from-json-import-submodule": (
        """
        from json import decoder

        def run_every_minute(meta):
            return str(decoder)
        """,
        "bad_plugin",
    ),
    "import-submodule-dotted": (
        """
        import json.decoder

        def run_every_minute(meta):
            return str(json.decoder)
        """,
        "bad_plugin",
    ),
    "from-urllib-import-request": (
        """
        from urllib import request

        def run_every_minute(meta):
            return str(request)
        """,
        "bad_plugin",
    ),
    "submodule-attribute": (
        """
        import json

        def run_every_minute(meta):
            return str(json.decoder.scanstring)
        """,
        "error",
    ),
    "relative-import": (
        """
        from . import secrets

        def run_every_minute(meta):
            return str(secrets)
        """,
        "bad_plugin",
    ),
    "eval": (
        """
        def run_every_minute(meta):
            return eval("__import__('os').getuid()")
        """,
        "bad_plugin",
    ),
    "open-builtin": (
        """
        def run_every_minute(meta):
            return open("/etc/passwd").read()
        """,
        "bad_plugin",
    ),
    "globals-builtin": (
        """
        def run_every_minute(meta):
            return str(globals())
        """,
        "bad_plugin",
    ),
    # -- allowed modules' helpers that do unguarded attribute work --------------------------
    "operator-attrgetter": (
        """
        import operator

        def run_every_minute(meta):
            return str(operator.attrgetter("__class__.__subclasses__")(meta))
        """,
        "error",
    ),
    "operator-methodcaller": (
        """
        import operator

        def run_every_minute(meta):
            return str(operator.methodcaller("__reduce_ex__", 2)(meta))
        """,
        "error",
    ),
    "functools-update-wrapper-globals": (
        """
        import functools
        import json

        def helper():
            pass

        def run_every_minute(meta):
            # merge json's real globals (and real __builtins__) into ours, then use them
            functools.update_wrapper(helper, json.dumps, assigned=(), updated=("__globals__",))

            real = getattr(helper, "__glob" + "als__")["__builtins__"]
            return real["getattr"](real["__import__"]("os"), "getuid")()
        """,
        "error",
    ),
    "functools-wraps-code": (
        """
        import functools
        import json

        def helper(meta):
            return None

        def run_every_minute(meta):
            functools.wraps(json.dumps, assigned=("__code__",), updated=())(helper)
            return "code object replaced"
        """,
        "error",
    ),
    "functools-singledispatch-annotation-eval": (
        """
        import functools
        import json

        LOOT = []

        def base(x):
            return 0

        def handler(x: "LOOT.append(json.dumps.__globals__['__builtins__']['__import__']('os').getuid()) or int"):
            return 1

        def run_every_minute(meta):
            functools.singledispatchmethod(base).register(handler)
            return LOOT
        """,
        "error",
    ),
    "monkey-patch-module-view": (
        """
        import json

        def run_every_minute(meta):
            json.dumps = lambda *args, **kwargs: "patched"
            return json.dumps(1)
        """,
        "error",
    ),
    "system-random-and-getnode": (
        """
        import uuid

        def run_every_minute(meta):
            return uuid.getnode()
        """,
        "error",
    ),
    # -- layer 1 trusts nothing the plugin made (names, hooks, memo objects, metaclasses) ----
    "str-subclass-name": (
        """
        class Sneaky(str):
            def startswith(self, prefix, *args):
                return False

            def __eq__(self, other):
                return False

            def __hash__(self):
                return 7

        def run_every_minute(meta):
            return str(getattr(meta, Sneaky("_channel")))
        """,
        "error",
    ),
    "str-subclass-name-hasattr-setattr": (
        """
        class Sneaky(str):
            def startswith(self, prefix, *args):
                return False

        def run_every_minute(meta):
            setattr(meta.storage, Sneaky("_data"), {"k": "forged"})
            return meta.storage.get("k")
        """,
        "error",
    ),
    "copy-deepcopy-memo": (
        """
        import copy

        def run_every_minute(meta):
            # deepcopy keeps every original it visits in memo[id(memo)]: the config's private dict
            memo = {}
            copy.deepcopy([meta.config], memo)
            return [str(o) for o in memo.get(id(memo), [])]
        """,
        "error",
    ),
    "copy-dispatch-table": (
        """
        import copy

        def run_every_minute(meta):
            copy.dispatch_table[type(meta)] = lambda m: (dict, ())
            return "dispatch table written"
        """,
        "error",
    ),
    "copy-reduce-writes-runtime-object": (
        """
        import copy

        def run_every_minute(meta):
            target = meta.storage

            class Evil:
                def __reduce__(self):
                    # _reconstruct would apply this state to `target` with __dict__.update
                    return (lambda: target, (), {"_data": {"k": "forged"}})

            copy.copy(Evil())
            return meta.storage.get("k")
        """,
        "error",
    ),
    "deepcopy-reduce-slotstate-setattr": (
        """
        import copy
        import json

        class Evil:
            def __reduce_ex__(self, protocol):
                # slot state is applied with a raw setattr: a module view, a class, a guard
                return (lambda: json.JSONEncoder, (), (None, {"item_separator": "HACKED"}))

        def run_every_minute(meta):
            copy.deepcopy(Evil())
            return json.dumps([1, 2])
        """,
        "error",
    ),
    "dataclasses-asdict-reduce": (
        """
        import dataclasses

        def run_every_minute(meta):
            target = meta.storage

            class Evil:
                def __reduce__(self):
                    return (lambda: target, (), {"_data": {"k": "forged"}})

            @dataclasses.dataclass
            class Box:
                item: object

            dataclasses.asdict(Box(Evil()))  # deep-copies with the real copy module
            return meta.storage.get("k")
        """,
        "error",
    ),
    "object-getattribute-private": (
        """
        def run_every_minute(meta):
            return str(object.__getattribute__(meta, "_channel"))
        """,
        "error",
    ),
    "object-getattribute-format": (
        """
        def run_every_minute(meta):
            return object.__getattribute__("{0._channel}", "format")(meta)
        """,
        "error",
    ),
    "object-setattr-runtime-object": (
        """
        def run_every_minute(meta):
            object.__setattr__(meta.storage, "_data", {"k": "forged"})
            return meta.storage.get("k")
        """,
        "error",
    ),
    "type-setattr-library-class": (
        """
        import json

        def run_every_minute(meta):
            type.__setattr__(json.JSONEncoder, "item_separator", "HACKED")
            return json.dumps([1, 2])
        """,
        "error",
    ),
    "descriptor-set-on-runtime-object": (
        """
        class Box:
            @property
            def value(self):
                return 1

            @value.setter
            def value(self, v):
                pass

        class Holder:
            data = property(lambda self: 0, lambda self, v: None)

        def run_every_minute(meta):
            # a bound __set__ of the plugin's own descriptor, applied to a runtime object
            setter = Holder.__dict__["data"].__set__
            setter(meta.storage, {"k": "forged"})
            slot = object.__setattr__
            slot(meta.run, "attempt", 99)
            return meta.run.attempt
        """,
        "error",
    ),
    "metaclass-eq-hash-fakes-plugin-class": (
        """
        import json

        class FakeMeta(type):
            def __eq__(cls, other):
                return True

            def __hash__(cls):
                return hash(json.JSONEncoder)

        class Fake(metaclass=FakeMeta):
            pass

        def run_every_minute(meta):
            json.JSONEncoder.item_separator = "HACKED"
            return json.dumps([1, 2])
        """,
        "error",
    ),
    "subclass-reaches-library-private": (
        """
        import random

        class Mine(random.Random):
            pass

        def run_every_minute(meta):
            return Mine(1)._randbelow(10)
        """,
        "error",
    ),
    "super-format-walk": (
        """
        class S(str):
            def format(self, *args):
                return super().format(*args)

        def run_every_minute(meta):
            return S("{0._channel}").format(meta)
        """,
        "error",
    ),
    "dataclass-on-library-class": (
        """
        import dataclasses
        import string

        def run_every_minute(meta):
            dataclasses.dataclass(string.Template)
            return "library class rewritten"
        """,
        "error",
    ),
    "dataclass-field-name-injection": (
        """
        import dataclasses

        class Row:
            a: int = 0

        def run_every_minute(meta):
            Row.__annotations__["b=0):\\n  import os\\n  return os.getuid() #"] = int
            return str(dataclasses.dataclass(Row)())
        """,
        "error",
    ),
    "total-ordering-on-library-class": (
        """
        import functools
        import string

        def run_every_minute(meta):
            functools.total_ordering(string.Template)
            return "library class rewritten"
        """,
        "error",
    ),
    "wraps-copies-runtime-dict": (
        """
        import functools

        def run_every_minute(meta):
            def helper():
                pass

            functools.update_wrapper(helper, meta)
            return str(helper._channel)
        """,
        "error",
    ),
    "typing-get-type-hints-eval": (
        """
        import typing

        def f(x: "().__class__.__base__.__subclasses__()"):
            pass

        def run_every_minute(meta):
            return str(typing.get_type_hints(f))
        """,
        "error",
    ),
    "enum-global-enum": (
        """
        import enum

        def run_every_minute(meta):
            return str(enum.global_enum)
        """,
        "error",
    ),
    "frozen-module-list": (
        """
        import urllib.parse

        def run_every_minute(meta):
            urllib.parse.uses_netloc.append("evil")
            return list(urllib.parse.uses_netloc)
        """,
        "error",
    ),
    "module-view-private-slot": (
        """
        import json

        def run_every_minute(meta):
            return str(getattr(type(json), "_view_attrs"))
        """,
        "error",
    ),
    "operator-setitem-module-dict": (
        """
        import operator
        import json

        def run_every_minute(meta):
            operator.setitem(json, "dumps", None)
            return "view changed"
        """,
        "error",
    ),
    "vars-of-runtime-object": (
        """
        def run_every_minute(meta):
            return str(vars(meta)["_channel"])
        """,
        "error",
    ),
    "mappingproxy-leak-str-subclass-key": (
        """
        import random

        class Sneaky(str):
            flip = [True]

            def __eq__(self, other):  # answers the guard one way and CPython the other
                self.flip[0] = not self.flip[0]
                return self.flip[0]

            def __hash__(self):
                return hash("_randbelow")

        class Leak:
            def __eq__(self, other):  # mappingproxy == x hands x the real class dict
                Leak.got = other
                return False

        class Mine(random.Random):
            pass

        def run_every_minute(meta):
            vars(Mine) == Leak()
            Leak.got[Sneaky("_randbelow")] = 1
            return Mine(1)._randbelow(10)
        """,
        "error",
    ),
    "typing-alias-setattr-forwards": (
        """
        import json
        import typing

        def run_every_minute(meta):
            # typing's aliases set attributes on their __origin__, which the plugin chooses
            alias = type(typing.List[int])(json.JSONEncoder, (int,))
            alias.item_separator = "HACKED"
            return json.dumps([1, 2])
        """,
        "error",
    ),
    "typing-alias-getattr-forwards": (
        """
        import typing

        def run_every_minute(meta):
            alias = type(typing.List[int])(meta, (int,))
            return str(alias.__getattr__("_channel"))
        """,
        "error",
    ),
    "cached-property-writes-instance-dict": (
        """
        import functools

        def run_every_minute(meta):
            def forged(self):
                return {"k": "forged"}

            prop = functools.cached_property(forged)
            prop.__set_name__(type(meta.storage), "_data")
            prop.__get__(meta.storage, type(meta.storage))
            return meta.storage.get("k")
        """,
        "error",
    ),
    "lru-cache-wrapper-dict": (
        """
        import functools

        def run_every_minute(meta):
            # update_wrapper (inside lru_cache) copies the wrapped object's __dict__ (here a
            # runtime class's, with its private methods) into the wrapper's __dict__
            wrapper = functools.lru_cache(type(meta.logger))
            return str(vars(wrapper)["_emit"])
        """,
        "error",
    ),
    "redirect-stdout": (
        """
        import contextlib

        def run_every_minute(meta):
            return str(contextlib.redirect_stdout)
        """,
        "error",
    ),
}


# Every way to bind a name: none may bind one of the guard names the transformed code calls.
GUARD_BINDINGS: dict[str, str] = {
    "positional-only-argument": "def run_every_minute(_getattr_=None, /, meta=None):\n    return 1\n",
    "keyword-only-argument": "def run_every_minute(meta, *, _getitem_=None):\n    return 1\n",
    "star-args": "def run_every_minute(meta, *_getiter_):\n    return 1\n",
    "lambda-argument": "f = lambda _write_: _write_\n",
    "for-target": "for _getattr_ in [lambda o, n: o]:\n    pass\n",
    "with-target": "def f(cm):\n    with cm as _getattr_:\n        pass\n",
    "except-target": "try:\n    pass\nexcept Exception as _getattr_:\n    pass\n",
    "walrus": "if (_print_ := None) is None:\n    pass\n",
    "comprehension": "x = [_getattr_ for _getattr_ in [1]]\n",
    "global-statement": "def f():\n    global _getattr_\n    _getattr_ = None\n",
    "augmented": "_inplacevar_ += 1\n",
    "delete": "del _getattr_\n",
    "tuple-unpack": "a, _getattr_ = 1, 2\n",
    "annotated-assignment": "_getattr_: object = None\n",
    "annotated-class-field": "class A:\n    _write_: object = None\n",
    "nonlocal": "def f():\n    _getitem_ = 1\n    def g():\n        nonlocal _getitem_\n        _getitem_ = 2\n",
    "class-name": "class _getiter_:\n    pass\n",
    "function-name": "def _apply_(*a):\n    pass\n",
    "temporary-name": "_tmp0 = lambda o: o\n",
    "match-capture": "def f(x):\n    match x:\n        case _getattr_:\n            pass\n",
}


@pytest.mark.parametrize("name", sorted(GUARD_BINDINGS))
def test_binding_a_guard_name_is_refused(sandbox: Sandbox, tmp_path: Path, name: str) -> None:
    source = GUARD_BINDINGS[name] + "\ndef run_every_minute(meta):\n    return 'guard shadowed'\n"
    if "def run_every_minute(" in GUARD_BINDINGS[name]:
        source = GUARD_BINDINGS[name]
    outcome = run_plugin(sandbox, tmp_path / name, source)
    assert outcome.outcome == "bad_plugin", (name, outcome.outcome, outcome.result, outcome.error)
    assert outcome.result is None
    assert outcome.error is not None and "line" in outcome.error.message.lower()


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_escape_is_refused(sandbox: Sandbox, tmp_path: Path, name: str) -> None:
    source, expected = ATTACKS[name]
    outcome = run_plugin(sandbox, tmp_path / name, source)
    assert outcome.outcome in ("bad_plugin", "error"), (
        f"{name}: the attack ran to {outcome.outcome} and returned {outcome.result!r}"
    )
    assert outcome.result is None, f"{name}: the payload's loot came back: {outcome.result!r}"
    assert outcome.outcome == expected, (name, outcome.outcome, outcome.error)
    assert outcome.error is not None and outcome.error.message
    if expected == "bad_plugin":
        # Refused at load time with a message that names the line.
        assert "line" in outcome.error.message.lower(), outcome.error.message
    else:
        # Refused at run time by a guard: the traceback points into the plugin's own code.
        assert outcome.error.type in (
            "SecurityError",
            "AttributeError",
            "ImportError",
            "KeyError",
            "NameError",
            "TypeError",
            "ValueError",
        ), outcome.error
        assert outcome.error.traceback and all(
            "main.py" in line for line in outcome.error.traceback
        )


def test_attacks_really_run(sandbox: Sandbox, tmp_path: Path) -> None:
    """The harness can see an attack succeed: an honest plugin's return value comes back, so a
    `result is None` above means the payload was stopped, not that results are lost."""
    outcome = run_plugin(
        sandbox,
        tmp_path / "honest",
        """
        import functools
        import json
        import string

        def run_every_minute(meta):
            add = functools.partial(lambda a, b: a + b, 1)
            return [json.dumps({"n": add(1)}), string.capwords("a b"), f"{meta.run.attempt:>3}"]
        """,
    )
    assert outcome.outcome == "ok", outcome.error
    assert outcome.result == ['{"n": 2}', "A B", "  1"]


def test_unrestricted_runs_are_refused_by_default(sandbox: Sandbox, tmp_path: Path) -> None:
    """The test-only unrestricted mode is off unless the Sandbox is built with it."""
    directory = tmp_path / "plain"
    directory.mkdir()
    (directory / "plugin.json").write_text(
        json.dumps({"name": "p", "version": "1.0.0", "main": "main.py"})
    )
    (directory / "main.py").write_text("def run_every_minute(meta):\n    return 1\n")
    request = RunRequest(
        plugin=load_plugin(directory),
        task="run_every_minute",
        unrestricted_source="import os\ndef run_every_minute(meta):\n    return os.getuid()\n",
    )
    outcome = sandbox.run(request)
    assert outcome.outcome == "bad_plugin"
    assert outcome.result is None
