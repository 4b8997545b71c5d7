"""Layer 1 at run time: the guards that RestrictedPython's transformed code calls, and the
builtins a plugin sees.

The rule (SECURITY.md, "Layer 1"): plugin code is ordinary Python over its own objects; what is
refused is what leads out of the language — dunder attributes that reach frames, code, globals,
builtins and class graphs, `_` names of objects the plugin did not define, writes to module
views, runtime objects and classes it did not define, and str.format's unguarded walks.

Nothing a plugin made is trusted here: attribute names are copied to exact `str` before any
check, classes are recognised by identity (never by `==`/`hash`, which a plugin metaclass can
define), and types by `type()` and raw descriptors (never by `isinstance`, which `__class__`
can fake).
"""

from __future__ import annotations

import builtins
import copy
import string
import types
import typing
from collections import UserString
from collections.abc import Callable
from typing import Any

from RestrictedPython.transformer import INSPECT_ATTRIBUTES


class SecurityError(Exception):
    """Raised inside the child when plugin code reaches for something it may not have."""


# -- what the plugin made ----------------------------------------------------------------------

# Classes made by the plugin's `class` statements, by id (kept alive, so ids are not reused).
_PLUGIN_CLASSES: dict[int, type] = {}
# Objects the plugin may hold but never change: module views and everything in them, the
# builtins and guards, the plugin's globals and builtins dicts. By id.
_PROTECTED: dict[int, object] = {}
# Types whose instances are never the plugin's to change or to open up (module views).
_PROTECTED_TYPES: set[type] = set()
# The globals dicts of plugin modules executing in this process (function attributes of
# functions defined there are the plugin's).
_PLUGIN_GLOBALS: dict[int, dict[str, Any]] = {}
# Runtime types (meta and its parts) are recognised by their defining module.
_RUNTIME_MODULE_PREFIXES = ("sandbox.", "runtime.")

# Library types whose __setattr__ forwards to another object (typing's aliases set attributes on
# their __origin__, which plugin code chooses when it builds one): never written through.
_FORWARDING: tuple[type, ...] = (typing._BaseGenericAlias,)  # type: ignore[attr-defined]

_MRO = type.__dict__["__mro__"].__get__
_TYPE_DICT = type.__dict__["__dict__"].__get__
_FUNC_GLOBALS = types.FunctionType.__dict__["__globals__"].__get__


def protect(*objects: object) -> None:
    for obj in objects:
        _PROTECTED[id(obj)] = obj


def protect_type(cls: type) -> None:
    _PROTECTED_TYPES.add(cls)


def register_class(cls: Any) -> None:
    if isinstance(cls, type):
        _PLUGIN_CLASSES[id(cls)] = cls


def is_plugin_class(obj: object) -> bool:
    return _PLUGIN_CLASSES.get(id(obj)) is obj


def _is_class(obj: object) -> bool:
    return issubclass(type(obj), type)


def _mro_of(obj: object) -> tuple[type, ...]:
    """The MRO that attribute lookup on `obj` walks, read with the raw descriptor."""
    if _is_class(obj):
        return _MRO(obj)  # type: ignore[no-any-return]
    return _MRO(type(obj))  # type: ignore[no-any-return]


def plugin_owned(obj: object) -> bool:
    """An instance of a plugin class, or a plugin class, or a subclass of one."""
    if isinstance(obj, super):
        obj = super.__dict__["__self_class__"].__get__(obj)
    return any(is_plugin_class(k) for k in _mro_of(obj))


def _defined_by_plugin(obj: object, name: str) -> bool:
    """Whether a `_`-name on `obj` is the plugin's own: the first class in the lookup order that
    defines it is a plugin class, or no class defines it and `obj` is plugin-owned (its instance
    dict, or its `__getattr__`)."""
    mro = _mro_of(obj)
    if isinstance(obj, super):
        this = super.__dict__["__thisclass__"].__get__(obj)
        mro = _MRO(super.__dict__["__self_class__"].__get__(obj))
        mro = mro[mro.index(this) + 1 :] if this in mro else ()
    for klass in mro:
        namespace = _TYPE_DICT(klass)
        if is_plugin_class(klass) and not all(type(key) is str for key in namespace):
            # A key of a str subclass (smuggled in through a leaked class dict) could answer
            # this lookup differently from CPython's own: refuse rather than guess.
            raise SecurityError(f"{_type_name(klass)} has attribute names that are not strings")
        if name in namespace:
            return is_plugin_class(klass)
    return plugin_owned(obj)


def exact_str(name: object, what: str = "attribute name") -> str:
    """Coerce a name to an exact `str` (a copy, for a subclass), or refuse it. A plugin's str
    subclass can redefine `__eq__`, `__hash__` and `startswith`; the copy cannot."""
    if type(name) is str:
        return name
    if isinstance(name, str):
        return str.__str__(name)
    raise TypeError(f"{what} must be a string, not {type(name).__name__}")


def may_write(obj: object) -> bool:
    """Whether plugin code may set attributes or items on `obj`."""
    if id(obj) in _PROTECTED and _PROTECTED[id(obj)] is obj:
        return False
    t = type(obj)
    if t in _PROTECTED_TYPES or issubclass(t, types.ModuleType) or issubclass(t, _FORWARDING):
        return False
    if plugin_owned(obj):
        return True
    if _is_class(obj):
        return False  # classes the plugin did not define (stdlib, runtime, builtins)
    if t is types.FunctionType:
        return _plugin_function(obj)
    # Runtime objects (meta and its parts) are not; the plugin's own objects of library types
    # are (Python itself raises for immutable ones).
    module = _TYPE_DICT(t).get("__module__")
    return not (isinstance(module, str) and module.startswith(_RUNTIME_MODULE_PREFIXES))


# -- attribute reads ---------------------------------------------------------------------------

# Dunder attributes plugin code may read, on any object. Everything else that looks like
# `__x__` is refused: the interpreter's internals (frames, code, globals, builtins, the class
# graph, pickling state) live behind those names.
DUNDER_READS = frozenset(
    {
        "__name__",
        "__qualname__",
        "__doc__",
        "__module__",
        "__class__",
        "__init__",
        "__new__",
        "__wrapped__",
        "__members__",
        "__slots__",
        "__match_args__",
        "__cause__",
        "__context__",
        "__suppress_context__",
        "__notes__",
        "__args__",
        "__origin__",
        "__parameters__",
        "__required_keys__",
        "__optional_keys__",
        "__total__",
        "__str__",
        "__repr__",
        "__format__",
        "__bytes__",
        "__hash__",
        "__bool__",
        "__len__",
        "__length_hint__",
        "__iter__",
        "__next__",
        "__reversed__",
        "__contains__",
        "__getitem__",
        "__missing__",
        "__enter__",
        "__exit__",
        "__call__",
        "__get__",
        "__dir__",
        "__sizeof__",
        "__copy__",
        "__deepcopy__",
        "__post_init__",
        "__init_subclass__",
        "__class_getitem__",
        "__set_name__",
        "__subclasshook__",
        "__instancecheck__",
        "__subclasscheck__",
        "__eq__",
        "__ne__",
        "__lt__",
        "__le__",
        "__gt__",
        "__ge__",
        "__neg__",
        "__pos__",
        "__abs__",
        "__invert__",
        "__int__",
        "__float__",
        "__complex__",
        "__index__",
        "__round__",
        "__trunc__",
        "__floor__",
        "__ceil__",
        *(
            f"__{p}{op}__"
            for op in (
                "add",
                "sub",
                "mul",
                "matmul",
                "truediv",
                "floordiv",
                "mod",
                "divmod",
                "pow",
                "lshift",
                "rshift",
                "and",
                "xor",
                "or",
            )
            for p in ("", "r", "i")
        ),
    }
)
# Read only on the plugin's own objects: they hand out the object's (or class's) namespace.
PLUGIN_DUNDER_READS = frozenset({"__dict__", "__annotations__", "__dataclass_fields__"})
# Reads that hand out a callable which writes or reads by name: the plugin gets a checked one.
CHECKED_METHODS = frozenset(
    {
        "__getattribute__",
        "__getattr__",
        "__setattr__",
        "__delattr__",
        "__setitem__",
        "__delitem__",
        "__set__",
        "__delete__",
    }
)
# Dunder attributes plugin code may assign (decorators copy a function's name and docs).
DUNDER_WRITES = frozenset({"__doc__", "__name__", "__qualname__", "__wrapped__"})
# Underscore names that are documented API of library classes (namedtuple, enum).
PUBLIC_UNDERSCORE = frozenset(
    {
        "_asdict",
        "_replace",
        "_fields",
        "_make",
        "_field_defaults",
        "_value_",
        "_name_",
        "_missing_",
        "_generate_next_value_",
        "_ignore_",
        "_order_",
    }
)
_FRAME_TYPES = (types.FrameType, types.TracebackType, types.CodeType)


def is_dunder(name: str) -> bool:
    return len(name) > 4 and name.startswith("__") and name.endswith("__")


def dunder_read_reason(name: str) -> str:
    """Why reading a dunder attribute is refused, in the author's words."""
    if name in {"__subclasses__", "__mro__", "__bases__", "__base__"}:
        return "walking the class graph is not allowed; use isinstance() or issubclass()"
    if name in {"__globals__", "__code__", "__closure__", "__builtins__", "__func__", "__self__"}:
        return "a function's internals (globals, code, closure) are not available to plugins"
    if name in {"__reduce__", "__reduce_ex__", "__getstate__", "__setstate__"}:
        return "pickling hooks may be defined but not read; use copy.copy() or copy.deepcopy()"
    if name == "__traceback__":
        return "tracebacks lead to frames; the run's error already shows your traceback"
    if name in PLUGIN_DUNDER_READS:
        return "only on objects of classes your plugin defines; use vars() on those, or dir()"
    return "it is not in the list of special attributes plugins may read"


def _check_read(obj: object, name: str) -> None:
    if isinstance(obj, types.ModuleType):
        raise SecurityError("access to raw modules is not allowed")
    if name in INSPECT_ATTRIBUTES or isinstance(obj, _FRAME_TYPES):
        raise SecurityError(
            f"'{name}' of {type(obj).__name__} objects is not allowed (frames and code objects "
            "are not available to plugins)"
        )
    if not name.startswith("_"):
        return
    if is_dunder(name):
        if name in DUNDER_READS or name in CHECKED_METHODS:
            return
        # Only the plugin's own objects' (and plain namespaces'): a library object's may hold
        # another object's namespace (functools.lru_cache(meta) copies meta.__dict__ into its
        # wrapper's).
        if (
            name in PLUGIN_DUNDER_READS
            and not _is_protected(obj)
            and not isinstance(obj, super)
            and (plugin_owned(obj) or _plugin_function(obj) or type(obj) is types.SimpleNamespace)
        ):
            return
        raise SecurityError(f"'{name}' cannot be read: {dunder_read_reason(name)}")
    if name in PUBLIC_UNDERSCORE and (plugin_owned(obj) or _is_namedtuple(obj)):
        return
    if _is_protected(obj) or not _defined_by_plugin(obj, name):
        raise SecurityError(
            f"'{name}' of {_type_name(obj)} objects is private: only attributes your plugin "
            "defines may start with '_'"
        )


def _plugin_function(obj: object) -> bool:
    """A function (or a method of one) defined by plugin code."""
    if type(obj) is types.MethodType:
        obj = obj.__func__
    if type(obj) is not types.FunctionType:
        return False
    g = _FUNC_GLOBALS(obj)
    return _PLUGIN_GLOBALS.get(id(g)) is g


def _is_protected(obj: object) -> bool:
    return (id(obj) in _PROTECTED and _PROTECTED[id(obj)] is obj) or type(obj) in _PROTECTED_TYPES


def _is_namedtuple(obj: object) -> bool:
    cls = obj if _is_class(obj) else type(obj)
    return issubclass(cls, tuple) and any(  # type: ignore[arg-type]
        "_fields" in _TYPE_DICT(k) for k in _MRO(cls)
    )


_QUALNAME = type.__dict__["__qualname__"].__get__


def _type_name(obj: object) -> str:
    cls = obj if _is_class(obj) else type(obj)
    return str(_QUALNAME(cls))


_STR_FORMAT = str.__dict__["format"]
_STR_FORMAT_MAP = str.__dict__["format_map"]
_USERSTRING_FORMAT = UserString.__dict__["format"]
_USERSTRING_FORMAT_MAP = UserString.__dict__["format_map"]


def _filter_value(obj: object, name: str, value: Any) -> Any:
    """What the plugin gets for `obj.name`: str.format and friends replaced by guarded
    versions, callables that write by name replaced by checked ones, raw modules refused."""
    if isinstance(value, types.ModuleType):
        raise SecurityError(f"'{name}' is a module: import it instead (if it is allowed)")
    if name in ("format", "format_map"):
        return _safe_format_method(name, value)
    if name in CHECKED_METHODS:
        return _checked_method(name, value)
    return value


_BOUND_TYPES = (types.MethodWrapperType, types.BuiltinMethodType, types.MethodType)


def _bound_self(value: Any) -> tuple[bool, Any]:
    if type(value) in _BOUND_TYPES:
        return True, value.__self__
    return False, None


def _safe_format_method(name: str, value: Any) -> Any:
    if value is _STR_FORMAT or value is _USERSTRING_FORMAT:
        return lambda template, *args, **kwargs: safe_format(_template(template), args, kwargs)
    if value is _STR_FORMAT_MAP or value is _USERSTRING_FORMAT_MAP:
        return lambda template, mapping: safe_format(_template(template), (), mapping)
    bound, target = _bound_self(value)
    if bound and isinstance(target, (str, UserString)):
        func = getattr(value, "__func__", None)
        if type(value) is types.BuiltinMethodType or func in (
            _USERSTRING_FORMAT,
            _USERSTRING_FORMAT_MAP,
        ):
            text = _template(target)
            if name == "format":
                return lambda *args, **kwargs: safe_format(text, args, kwargs)
            return lambda mapping: safe_format(text, (), mapping)
    return value


def _template(value: object) -> str:
    if isinstance(value, UserString):
        value = value.data
    return exact_str(value, "format string")


class _GuardedFormatter(string.Formatter):
    """str.format with every `.attr` and `[key]` of a field going through the guards."""

    def get_field(self, field_name: str, args: Any, kwargs: Any) -> Any:
        import _string

        first, rest = _string.formatter_field_name_split(field_name)
        obj = self.get_value(first, args, kwargs)
        for is_attr, key in rest:
            try:
                obj = guarded_getattr(obj, key) if is_attr else guarded_getitem(obj, key)
            except SecurityError as exc:
                raise SecurityError(f"str.format field '{{{field_name}}}': {exc}") from None
        return obj, first


_FORMATTER = _GuardedFormatter()


def safe_format(template: str, args: Any, kwargs: Any) -> str:
    return _FORMATTER.vformat(template, tuple(args), kwargs)


def _checked_method(name: str, value: Any) -> Any:
    """`object.__setattr__`, `super().__setattr__`, `dict.__setitem__`, a descriptor's `__set__`,
    `object.__getattribute__` and friends: the same checks as the statement they stand for.
    Which argument is the object acted on depends on the method and on whether it is bound."""
    bound, target = _bound_self(value)
    descriptor = name in ("__set__", "__delete__")
    reads = name in ("__getattribute__", "__getattr__")

    def call(*args: Any) -> Any:
        full = args if not bound else (target, *args)
        # (self, instance, value) for descriptors; (obj, name, ...) / (obj, key, ...) otherwise
        index = 1 if descriptor else 0
        if len(full) <= index:
            return value(*args)
        obj = full[index]
        rest = list(full[index + 1 :])
        if reads:
            if rest:
                rest[0] = exact_str(rest[0])
                _check_read(obj, rest[0])
        else:
            if not may_write(obj):
                raise SecurityError(f"{_type_name(obj)} objects cannot be changed by plugins")
            if name in ("__setattr__", "__delattr__") and rest:
                rest[0] = exact_str(rest[0])
                check_write_name(rest[0])
        new = (*full[: index + 1], *rest)
        result = value(*(new[1:] if bound else new))
        if reads and rest:
            return _filter_value(obj, rest[0], result)
        return result

    return call


def check_write_name(name: str) -> None:
    if is_dunder(name) and name not in DUNDER_WRITES:
        raise SecurityError(f"'{name}' cannot be assigned by plugins")


def guarded_getattr(obj: Any, name: Any, *default: Any) -> Any:
    """`_getattr_` and the `getattr` builtin."""
    name = exact_str(name)
    _check_read(obj, name)
    value = getattr(obj, name, default[0]) if default else getattr(obj, name)
    return _filter_value(obj, name, value)


def guarded_hasattr(obj: Any, name: Any) -> bool:
    try:
        guarded_getattr(obj, name)
    except (AttributeError, SecurityError):
        return False
    return True


def guarded_setattr(obj: Any, name: Any, value: Any) -> None:
    name = exact_str(name)
    check_write_name(name)
    setattr(guarded_write(obj), name, value)


def guarded_delattr(obj: Any, name: Any) -> None:
    name = exact_str(name)
    check_write_name(name)
    delattr(guarded_write(obj), name)


def guarded_vars(*args: Any) -> Any:
    if len(args) != 1:
        raise SecurityError("vars() needs an object in plugins (there is no globals() either)")
    return guarded_getattr(args[0], "__dict__")


class _ReadOnly:
    """What `_write_` returns for an object plugin code may not change."""

    __slots__ = ("_target",)

    def __init__(self, target: object) -> None:
        object.__setattr__(self, "_target", target)

    def _refuse(self, *_: Any) -> None:
        target = object.__getattribute__(self, "_target")
        if type(target) in _PROTECTED_TYPES or isinstance(target, types.ModuleType):
            raise SecurityError(f"{target!r} is read-only in plugins")
        raise SecurityError(
            f"{_type_name(target)} objects cannot be changed by plugins (they are not yours)"
        )

    __setattr__ = __delattr__ = __setitem__ = __delitem__ = _refuse


def guarded_write(obj: Any) -> Any:
    """`_write_`: the object itself when plugin code may change it, else a refusing proxy."""
    if may_write(obj):
        return obj
    return _ReadOnly(obj)


def guarded_getitem(obj: Any, key: Any) -> Any:
    return obj[key]


def guarded_getiter(obj: Any) -> Any:
    return iter(obj)


def guarded_apply(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return func(*args, **kwargs)


_INPLACE: dict[str, Callable[[Any, Any], Any]] = {}


def _init_inplace() -> None:
    import operator

    for op, func in {
        "+=": operator.iadd,
        "-=": operator.isub,
        "*=": operator.imul,
        "/=": operator.itruediv,
        "//=": operator.ifloordiv,
        "%=": operator.imod,
        "**=": operator.ipow,
        "<<=": operator.ilshift,
        ">>=": operator.irshift,
        "|=": operator.ior,
        "^=": operator.ixor,
        "&=": operator.iand,
        "@=": operator.imatmul,
    }.items():
        _INPLACE[op] = func


_init_inplace()


def guarded_inplacevar(op: str, x: Any, y: Any) -> Any:
    """`_inplacevar_`: `x op= y` with Python's in-place semantics (`list += ...` extends)."""
    try:
        func = _INPLACE[op]
    except KeyError:
        raise SecurityError(f"operator {op} is not allowed") from None
    return func(x, y)


# -- copy: reductions may only rebuild the plugin's own objects --------------------------------

_ORIGINAL_RECONSTRUCT = copy._reconstruct  # type: ignore[attr-defined]
_COPY_STATE_TYPES: set[type] = {types.SimpleNamespace}


def _guarded_reconstruct(
    x: Any,
    memo: Any,
    func: Any,
    args: Any,
    state: Any = None,
    listiter: Any = None,
    dictiter: Any = None,
    **kwargs: Any,
) -> Any:
    """copy's `_reconstruct`, which applies a `__reduce__`'s state, list and dict items with raw
    `setattr`/`__dict__.update`/`[k] = v` to whatever the reduction's callable returned. In a
    plugin process it only does so for the plugin's own objects (and plain namespaces), and only
    onto a new object of the same type: a plugin `__reduce__` returning an existing runtime
    object or module view would otherwise be a write past every guard."""
    if not _PLUGIN_GLOBALS or (state is None and listiter is None and dictiter is None):
        return _ORIGINAL_RECONSTRUCT(x, memo, func, args, state, listiter, dictiter, **kwargs)
    cls = type(x)
    if not (plugin_owned(x) or cls in _COPY_STATE_TYPES or _is_library_container(cls)):
        raise TypeError(f"cannot copy {_type_name(x)} objects in a plugin")

    def build(*a: Any) -> Any:
        y = func(*a)
        if type(y) is not cls or not may_write(y):
            raise TypeError(f"cannot copy {_type_name(x)}: its reduction returned another object")
        return y

    return _ORIGINAL_RECONSTRUCT(x, memo, build, args, state, listiter, dictiter, **kwargs)


def _is_library_container(cls: type) -> bool:
    import collections

    return cls in (
        collections.OrderedDict,
        collections.defaultdict,
        collections.Counter,
        collections.deque,
        collections.UserDict,
        collections.UserList,
        collections.UserString,
    )


def install_copy_guard() -> None:
    copy._reconstruct = _guarded_reconstruct  # type: ignore[attr-defined]


# -- builtins ---------------------------------------------------------------------------------

_SAFE_BUILTIN_NAMES = (
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
    "classmethod",
    "complex",
    "dict",
    "dir",
    "divmod",
    "enumerate",
    "filter",
    "float",
    "format",
    "frozenset",
    "hash",
    "hex",
    "id",
    "int",
    "isinstance",
    "issubclass",
    "iter",
    "len",
    "list",
    "map",
    "max",
    "memoryview",
    "min",
    "next",
    "object",
    "oct",
    "ord",
    "pow",
    "property",
    "range",
    "repr",
    "reversed",
    "round",
    "set",
    "slice",
    "sorted",
    "staticmethod",
    "str",
    "sum",
    "super",
    "tuple",
    "type",
    "zip",
    "True",
    "False",
    "None",
    "NotImplemented",
    "Ellipsis",
)
# Every exception and warning class (OSError, TimeoutError, ExceptionGroup, ...).
_EXCEPTION_NAMES = tuple(
    name
    for name, value in vars(builtins).items()
    if isinstance(value, type) and issubclass(value, BaseException)
)
# Builtins that are refused, with what to write instead (also used for compile-time messages).
MISSING_BUILTINS: dict[str, str] = {
    "eval": "plugins cannot run code built from strings; write the code, or parse data with json",
    "exec": "plugins cannot run code built from strings; write the code itself",
    "compile": "plugins cannot compile code at run time; write the code itself",
    "open": "there is no file system in the sandbox: keep data in meta.storage, "
    "fetch it with meta.fetch, or use io.StringIO for in-memory files",
    "input": "there is no terminal: read settings from meta.config",
    "globals": "the module's globals are not available; keep state in a dict or an object",
    "locals": "locals() is not available; pass values explicitly",
    "breakpoint": "there is no debugger in the sandbox; use meta.logger or print()",
    "help": "there is no terminal in the sandbox",
    "exit": "return from the task (or raise an exception) to end a run",
    "quit": "return from the task (or raise an exception) to end a run",
    "aiter": "plugins run synchronously (no async)",
    "anext": "plugins run synchronously (no async)",
}


def make_builtins(import_guard: Callable[..., Any], fetch_error: type) -> dict[str, Any]:
    safe: dict[str, Any] = {name: getattr(builtins, name) for name in _SAFE_BUILTIN_NAMES}
    safe.update({name: getattr(builtins, name) for name in _EXCEPTION_NAMES})
    safe.update(
        {
            "__import__": import_guard,
            "__build_class__": build_class,
            "getattr": guarded_getattr,
            "hasattr": guarded_hasattr,
            "setattr": guarded_setattr,
            "delattr": guarded_delattr,
            "vars": guarded_vars,
            "SecurityError": SecurityError,
            "FetchError": fetch_error,
        }
    )
    return safe


def build_class(func: Any, name: Any, *bases: Any, **kwargs: Any) -> Any:
    """`__build_class__`: a `class` statement; the class is recorded as the plugin's."""
    cls = builtins.__build_class__(func, name, *bases, **kwargs)
    if isinstance(cls, type):
        for key in _TYPE_DICT(cls):
            if type(key) is not str:
                raise TypeError("class attribute names must be plain strings")
    register_class(cls)
    return cls


def enter_plugin_globals(glb: dict[str, Any]) -> None:
    _PLUGIN_GLOBALS[id(glb)] = glb
    protect(glb, glb["__builtins__"])


GUARDS: dict[str, Any] = {
    "_getattr_": guarded_getattr,
    "_getitem_": guarded_getitem,
    "_getiter_": guarded_getiter,
    "_write_": guarded_write,
    "_inplacevar_": guarded_inplacevar,
    "_apply_": guarded_apply,
}
