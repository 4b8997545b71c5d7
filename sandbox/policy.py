"""Layer 1: restricted compile, guarded builtins and an import allowlist.

This layer stops honest mistakes and casual abuse and gives plugin authors errors that name the
line. It is not the security boundary (the process jail is); SECURITY.md lists which escape
classes it stops and which layer stops the rest.
"""

from __future__ import annotations

import ast
import builtins
import types
import warnings
from collections import UserString
from collections.abc import Callable, Iterable
from typing import Any

from RestrictedPython import compile_restricted
from RestrictedPython.Guards import (
    full_write_guard,
    guarded_iter_unpack_sequence,
    guarded_unpack_sequence,
)

# Pure modules a plugin may import. Each is exposed through a read-only proxy that hides
# private names, submodules and anything listed in _HIDDEN (e.g. string.Formatter, which would
# reopen the format-string attribute walk).
ALLOWED_MODULES: tuple[str, ...] = (
    "base64",
    "bisect",
    "calendar",
    "collections",
    "copy",
    "datetime",
    "decimal",
    "fractions",
    "functools",
    "hashlib",
    "heapq",
    "hmac",
    "itertools",
    "json",
    "math",
    "operator",
    "random",
    "re",
    "statistics",
    "string",
    "textwrap",
    "time",
    "urllib.parse",
    "uuid",
)
_HIDDEN: dict[str, set[str]] = {
    "string": {"Formatter", "Template"},
    "operator": {"attrgetter", "methodcaller"},  # would bypass the attribute guard
    # update_wrapper/wraps get and set attributes named by the caller (e.g. `__globals__`,
    # `__code__`); singledispatch(method).register eval()s string annotations unguarded.
    "functools": {"update_wrapper", "wraps", "singledispatch", "singledispatchmethod"},
    "random": {"SystemRandom"},
    "uuid": {"getnode", "uuid1"},  # may shell out to find a MAC address
}

# Private modules that allowed modules import lazily from C (with the caller's __import__).
_INTERNAL_IMPORTS = frozenset({"_strptime"})

# Attributes that walk from an object to frames, code and globals: refused on these types.
_FRAME_TYPES = (
    types.GeneratorType,
    types.CoroutineType,
    types.AsyncGeneratorType,
    types.FrameType,
    types.TracebackType,
    types.CodeType,
    types.FunctionType,
    types.MethodType,
)
_FORMAT_METHODS = {"format", "format_map"}


class PluginCodeError(Exception):
    """Plugin code that cannot be loaded: a syntax error or a forbidden construct, with its line."""


class SecurityError(Exception):
    """Raised inside the child when plugin code reaches for something it may not have."""


def _module_view(name: str) -> types.SimpleNamespace:
    import importlib

    module = importlib.import_module(name)
    hidden = _HIDDEN.get(name, set())
    public = {
        key: value
        for key, value in vars(module).items()
        if not key.startswith("_") and key not in hidden and not isinstance(value, types.ModuleType)
    }
    view = types.SimpleNamespace(**public)
    return view


class ImportGuard:
    """A guarded `__import__`: allowlisted modules only, each as a read-only view."""

    def __init__(self, allowed: Iterable[str] = ALLOWED_MODULES) -> None:
        self._allowed = set(allowed)
        self._views: dict[str, types.SimpleNamespace] = {}

    def preload(self) -> None:
        """Import every allowed module now (in the warm fork server), so a jailed child with no
        filesystem access never needs to read a file to import."""
        for name in self._allowed:
            self.view(name)
        import importlib

        for name in _INTERNAL_IMPORTS:
            importlib.import_module(name)

    def view(self, name: str) -> types.SimpleNamespace:
        if name not in self._views:
            self._views[name] = _module_view(name)
        return self._views[name]

    def __call__(
        self,
        name: str,
        globals: Any = None,
        locals: Any = None,
        fromlist: Any = (),
        level: int = 0,
    ) -> Any:
        if name in _INTERNAL_IMPORTS and level == 0:
            # Imported lazily by an allowed module's C code (datetime.strptime), never by plugin
            # code: a restricted plugin cannot spell a name that starts with "_".
            import importlib

            return importlib.import_module(name)
        if level != 0 or name not in self._allowed:
            raise ImportError(
                f"import of '{name}' is not allowed (allowed: {', '.join(sorted(self._allowed))})"
            )
        if "." in name and not fromlist:
            # `import urllib.parse` binds `urllib`; give it a namespace holding the view.
            head, _, tail = name.partition(".")
            return types.SimpleNamespace(**{tail: self.view(name)})
        return self.view(name)


def check_imports(tree: ast.AST, filename: str, allowed: Iterable[str] = ALLOWED_MODULES) -> None:
    """Refuse forbidden imports at load time, naming the line, rather than at run time."""
    allowed_set = set(allowed)
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                raise PluginCodeError(
                    f"{filename}, line {node.lineno}: relative imports are not allowed"
                )
            names = [node.module or ""]
        for name in names:
            if name not in allowed_set:
                line = getattr(node, "lineno", 0)
                raise PluginCodeError(
                    f"{filename}, line {line}: import of '{name}' is not allowed "
                    f"(allowed: {', '.join(sorted(allowed_set))})"
                )


def compile_plugin(source: str, filename: str = "main.py") -> types.CodeType:
    """Compile plugin source with RestrictedPython. Raises PluginCodeError naming the line."""
    try:
        tree = ast.parse(source, filename=filename)
    except SyntaxError as exc:
        raise PluginCodeError(f"{filename}, line {exc.lineno}: syntax error: {exc.msg}") from exc
    check_imports(tree, filename)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SyntaxWarning)  # "prints but never reads 'printed'"
            code = compile_restricted(source, filename=filename, mode="exec")
    except SyntaxError as exc:
        # RestrictedPython reports every refused construct as "Line N: reason".
        reasons = exc.args[0] if isinstance(exc.args[0], tuple) else exc.args
        first = str(reasons[0]) if reasons else str(exc)
        raise PluginCodeError(f"{filename}: {first}") from exc
    return code


def _is_formatter(obj: Any) -> bool:
    """str and UserString instances, and the classes themselves or any subclass: their
    `format`/`format_map` walk attributes unguarded (`S.format("{0.__class__}", x)`)."""
    if isinstance(obj, type):
        return issubclass(obj, (str, UserString))
    return isinstance(obj, (str, UserString))


def guarded_getattr(obj: Any, name: str, default: Any = None, *args: Any) -> Any:
    """`_getattr_`: no private names, no str.format attribute walks, no frame/code walks."""
    if not isinstance(name, str):
        raise TypeError("attribute name must be a string")
    if name.startswith("_"):
        raise SecurityError(f"access to private attribute '{name}' is not allowed")
    if name in _FORMAT_METHODS and _is_formatter(obj):
        raise SecurityError(
            f"str.{name} is not allowed (its fields can walk attributes); use f-strings"
        )
    if isinstance(obj, _FRAME_TYPES) and name not in {"__name__"}:
        # Generators, frames and functions lead to code objects and real globals.
        raise SecurityError(f"access to '{name}' on {type(obj).__name__} objects is not allowed")
    if isinstance(obj, types.ModuleType):
        raise SecurityError("access to raw modules is not allowed")
    if args:
        return getattr(obj, name, default)
    return getattr(obj, name) if default is None else getattr(obj, name, default)


def _getattr_builtin(obj: Any, name: str, *default: Any) -> Any:
    if default:
        try:
            return guarded_getattr(obj, name)
        except AttributeError:
            return default[0]
    return guarded_getattr(obj, name)


def _hasattr_builtin(obj: Any, name: str) -> bool:
    try:
        guarded_getattr(obj, name)
    except (AttributeError, SecurityError):
        return False
    return True


def guarded_getitem(obj: Any, key: Any) -> Any:
    return obj[key]


def guarded_getiter(obj: Any) -> Any:
    return iter(obj)


def guarded_apply(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return func(*args, **kwargs)


_INPLACE_OPS: dict[str, Callable[[Any, Any], Any]] = {
    "+=": lambda a, b: a + b,
    "-=": lambda a, b: a - b,
    "*=": lambda a, b: a * b,
    "/=": lambda a, b: a / b,
    "//=": lambda a, b: a // b,
    "%=": lambda a, b: a % b,
    "**=": lambda a, b: a**b,
    "<<=": lambda a, b: a << b,
    ">>=": lambda a, b: a >> b,
    "|=": lambda a, b: a | b,
    "^=": lambda a, b: a ^ b,
    "&=": lambda a, b: a & b,
}


def guarded_inplacevar(op: str, x: Any, y: Any) -> Any:
    try:
        return _INPLACE_OPS[op](x, y)
    except KeyError:
        raise SecurityError(f"operator {op} is not allowed") from None


_SAFE_BUILTIN_NAMES = [
    "abs",
    "all",
    "any",
    "ascii",
    "bin",
    "bool",
    "bytearray",
    "bytes",
    "callable",
    "chr",
    "complex",
    "dict",
    "divmod",
    "enumerate",
    "filter",
    "float",
    "frozenset",
    "hash",
    "hex",
    "int",
    "isinstance",
    "issubclass",
    "iter",
    "len",
    "list",
    "map",
    "max",
    "min",
    "next",
    "oct",
    "ord",
    "pow",
    "range",
    "repr",
    "reversed",
    "round",
    "set",
    "slice",
    "sorted",
    "str",
    "sum",
    "tuple",
    "zip",
    "ArithmeticError",
    "AssertionError",
    "AttributeError",
    "Exception",
    "IndexError",
    "KeyError",
    "LookupError",
    "NameError",
    "NotImplementedError",
    "OverflowError",
    "RecursionError",
    "RuntimeError",
    "StopIteration",
    "TypeError",
    "UnicodeError",
    "ValueError",
    "ZeroDivisionError",
    "MemoryError",
    "ImportError",
    "True",
    "False",
    "None",
]


def make_builtins(import_guard: ImportGuard) -> dict[str, Any]:
    safe = {name: getattr(builtins, name) for name in _SAFE_BUILTIN_NAMES}
    safe.update(
        {
            "__import__": import_guard,
            "__build_class__": builtins.__build_class__,
            "getattr": _getattr_builtin,
            "hasattr": _hasattr_builtin,
            "SecurityError": SecurityError,
        }
    )
    return safe


def make_globals(
    import_guard: ImportGuard, print_factory: Callable[..., Any], name: str = "plugin"
) -> dict[str, Any]:
    """Fresh globals for one execution of a plugin module, with every guard RestrictedPython's
    transformed code calls."""
    return {
        "__builtins__": make_builtins(import_guard),
        "__name__": name,
        "__metaclass__": type,
        "_getattr_": guarded_getattr,
        "_getitem_": guarded_getitem,
        "_getiter_": guarded_getiter,
        "_write_": full_write_guard,
        "_unpack_sequence_": guarded_unpack_sequence,
        "_iter_unpack_sequence_": guarded_iter_unpack_sequence,
        "_inplacevar_": guarded_inplacevar,
        "_apply_": guarded_apply,
        "_print_": print_factory,
    }
