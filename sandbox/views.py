"""Layer 1: the standard library a plugin may import, each module seen through a reviewed,
read-only view.

A view holds a module's public names only (no `_` names, no submodules it did not ask for),
minus what the review hid, with a few callables replaced by checked versions (`WRAPPED`), and
with module-level mutable containers frozen (a list becomes a tuple, a dict a read-only mapping),
so plugin code can neither reach private state nor change what the module does for anyone else.
The review notes for each module are next to its entry in `HIDDEN` and `WRAPPED`.
"""

from __future__ import annotations

import importlib
import types
from collections.abc import Callable, Iterable, Mapping
from typing import Any

# Modules (and dotted submodules) a plugin may import. Each was reviewed for callables that
# reach files, processes, the network, frames or code objects, and for state that plugin code
# could change behind other code's back.
ALLOWED_MODULES: tuple[str, ...] = (
    "__future__",
    "abc",
    "base64",
    "binascii",
    "bisect",
    "calendar",
    "cmath",
    "collections",
    "collections.abc",
    "colorsys",
    "contextlib",
    "copy",
    "csv",
    "dataclasses",
    "datetime",
    "decimal",
    "difflib",
    "enum",
    "fnmatch",
    "fractions",
    "functools",
    "graphlib",
    "hashlib",
    "heapq",
    "hmac",
    "html",
    "html.parser",
    "io",
    "ipaddress",
    "itertools",
    "json",
    "math",
    "numbers",
    "operator",
    "plugin_runtime",
    "pprint",
    "random",
    "re",
    "secrets",
    "statistics",
    "string",
    "struct",
    "textwrap",
    "time",
    "types",
    "typing",
    "unicodedata",
    "urllib.parse",
    "uuid",
    "xml.etree.ElementTree",
    "zlib",
    "zoneinfo",
)

# Names a view leaves out, and why.
HIDDEN: dict[str, set[str]] = {
    # Formatter.format walks attributes unguarded (`"{0.__class__}"`); str.format itself is
    # replaced by a guarded version in the attribute guard.
    "string": {"Formatter"},
    # singledispatch(...).register evaluates string annotations with eval().
    "functools": {"singledispatch", "singledispatchmethod"},
    "random": {"SystemRandom"},  # use `secrets`
    "uuid": {"getnode", "uuid1"},  # may shell out to find a MAC address
    # get_type_hints and ForwardRef evaluate strings with eval(); the overload registry is
    # module state.
    "typing": {"get_type_hints", "ForwardRef", "get_overloads", "clear_overloads"},
    # global_enum writes into sys.modules[cls.__module__].
    "enum": {"global_enum"},
    # These change process-wide state (sys.stdout, the working directory).
    "contextlib": {"redirect_stdout", "redirect_stderr", "chdir"},
    # dispatch_table is copyreg's process-wide registry of reducers.
    "copy": {"dispatch_table"},
    "pprint": {"pprint", "pp"},  # write to sys.stdout; use pformat
    "io": set(),  # io is built from IN_MEMORY_IO below, not filtered
    "types": set(),
    "time": {"tzset"},
    "zoneinfo": {"reset_tzpath"},
    "xml.etree.ElementTree": {"parse", "iterparse", "ElementTree"},  # read files by name
}

# io: the in-memory classes only (no open(), FileIO, open_code).
IN_MEMORY_IO = (
    "StringIO",
    "BytesIO",
    "TextIOWrapper",
    "UnsupportedOperation",
    "SEEK_SET",
    "SEEK_CUR",
    "SEEK_END",
    "DEFAULT_BUFFER_SIZE",
)
TYPES_NAMES = ("SimpleNamespace", "MappingProxyType")

# Private modules that allowed modules import lazily from C (with the caller's __import__).
INTERNAL_IMPORTS = frozenset({"_strptime"})


class ModuleView:
    """A read-only module: attribute reads only, from a frozen mapping held in a slot that plugin
    code cannot name (`_` names of runtime objects are refused by the attribute guard, and writes
    by the write guard)."""

    __slots__ = ("_view_name", "_view_attrs")

    # No `__name__`: on `from view import x` where x is missing, CPython would look
    # f"{view.__name__}.x" up in sys.modules and hand out the real submodule.

    def __getattr__(self, name: str) -> Any:
        attrs: Mapping[str, Any] = _ATTRS_SLOT.__get__(self)
        try:
            return attrs[name]
        except KeyError:
            raise AttributeError(
                f"module '{_NAME_SLOT.__get__(self)}' has no attribute '{name}' "
                "(or it is not available to plugins)"
            ) from None

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"module '{_NAME_SLOT.__get__(self)}' is read-only in plugins")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"module '{_NAME_SLOT.__get__(self)}' is read-only in plugins")

    def __dir__(self) -> list[str]:
        return sorted(_ATTRS_SLOT.__get__(self))

    def __repr__(self) -> str:
        return f"<module '{_NAME_SLOT.__get__(self)}'>"


_ATTRS_SLOT = ModuleView.__dict__["_view_attrs"]
_NAME_SLOT = ModuleView.__dict__["_view_name"]


def make_view(name: str, attrs: Mapping[str, Any]) -> ModuleView:
    view = object.__new__(ModuleView)
    _NAME_SLOT.__set__(view, name)
    _ATTRS_SLOT.__set__(view, types.MappingProxyType(dict(attrs)))
    return view


def view_attrs(view: ModuleView) -> Mapping[str, Any]:
    attrs: Mapping[str, Any] = _ATTRS_SLOT.__get__(view)
    return attrs


def _freeze(value: Any) -> Any:
    """Module-level mutable containers are shown as frozen copies: the module keeps using its
    own, and plugin code cannot change it."""
    if isinstance(value, list):
        return tuple(value)
    if isinstance(value, (set, frozenset)):
        return frozenset(value)
    if isinstance(value, dict):
        return types.MappingProxyType(dict(value))
    if isinstance(value, bytearray):
        return bytes(value)
    return value


def public_attrs(name: str, wrapped: Mapping[str, Callable[..., Any]]) -> dict[str, Any]:
    """A module's names as its view shows them."""
    if name == "plugin_runtime":
        from sandbox.policy import plugin_runtime_names

        return plugin_runtime_names()
    module = importlib.import_module(name)
    hidden = HIDDEN.get(name, set())
    if name == "io":
        keep: Iterable[str] = IN_MEMORY_IO
    elif name == "types":
        keep = TYPES_NAMES
    else:
        keep = (key for key in vars(module) if not key.startswith("_"))
    attrs: dict[str, Any] = {}
    for key in keep:
        if key in hidden or key.endswith("_CAPI"):
            continue
        value = getattr(module, key)
        if isinstance(value, types.ModuleType):
            continue
        attrs[key] = wrapped.get(f"{name}.{key}", _freeze(value))
    return attrs


# -- checked versions of library callables that write by name or to what they are given -------


def _plugin_class_only(func: Callable[..., Any], what: str) -> Callable[..., Any]:
    from sandbox import guards

    def checked(cls: Any, *args: Any, **kwargs: Any) -> Any:
        if not guards.is_plugin_class(cls):
            raise guards.SecurityError(f"{what} applies only to classes your plugin defines")
        return func(cls, *args, **kwargs)

    checked.__name__ = checked.__qualname__ = func.__name__
    checked.__doc__ = func.__doc__
    return checked


def _dataclass(cls: Any = None, /, **kwargs: Any) -> Any:
    """dataclasses.dataclass for the plugin's own classes. Field names are checked to be
    identifiers: dataclasses builds the generated methods' source text from them."""
    import dataclasses
    import keyword

    from sandbox import guards

    def wrap(c: Any) -> Any:
        if not guards.is_plugin_class(c):
            raise guards.SecurityError("@dataclass applies only to classes your plugin defines")
        annotations = type.__dict__["__dict__"].__get__(c).get("__annotations__", {})
        if type(annotations) is not dict:
            raise TypeError("a dataclass's __annotations__ must be a dict")
        for key in annotations:
            if type(key) is not str or not key.isidentifier() or keyword.iskeyword(key):
                raise TypeError(f"dataclass field name {key!r} is not an identifier")
        result = dataclasses.dataclass(c, **kwargs)
        guards.register_class(result)
        return result

    return wrap if cls is None else wrap(cls)


def _make_dataclass(*args: Any, **kwargs: Any) -> Any:
    import dataclasses

    from sandbox import guards

    result = dataclasses.make_dataclass(*args, **kwargs)
    guards.register_class(result)
    return result


def _update_wrapper(wrapper: Any, wrapped: Any, assigned: Any = None, updated: Any = None) -> Any:
    """functools.update_wrapper limited to the standard attributes (the real one gets and sets
    any attribute the caller names: `__globals__`, `__code__`), copying a `__dict__` only from
    the plugin's own functions and objects."""
    import functools

    from sandbox import guards

    for given, standard in (
        (assigned, functools.WRAPPER_ASSIGNMENTS),
        (updated, functools.WRAPPER_UPDATES),
    ):
        if given is not None and (
            type(given) is not tuple
            or not all(type(a) is str for a in given)
            or not set(given) <= set(standard)
        ):
            raise guards.SecurityError(
                "functools.wraps/update_wrapper copy only the standard attributes in plugins"
            )
    if not guards.may_write(wrapper):
        raise guards.SecurityError("functools.wraps: the wrapper must be your plugin's function")
    names = functools.WRAPPER_ASSIGNMENTS if assigned is None else assigned
    for attr in names:
        try:
            value = getattr(wrapped, attr)
        except AttributeError:
            continue
        setattr(wrapper, attr, dict(value) if attr == "__annotations__" else value)
    if (updated is None or "__dict__" in updated) and (
        guards.plugin_owned(wrapped)
        or (isinstance(wrapped, types.FunctionType) and guards.may_write(wrapped))
    ):
        wrapper.__dict__.update(wrapped.__dict__)
    wrapper.__wrapped__ = wrapped
    return wrapper


def _wraps(wrapped: Any, assigned: Any = None, updated: Any = None) -> Any:
    import functools

    return functools.partial(_update_wrapper, wrapped=wrapped, assigned=assigned, updated=updated)


def _setitem(obj: Any, key: Any, value: Any) -> None:
    from sandbox import guards

    guards.guarded_write(obj)[key] = value


def _delitem(obj: Any, key: Any) -> None:
    from sandbox import guards

    del guards.guarded_write(obj)[key]


def _attrgetter(*names: Any) -> Callable[[Any], Any]:
    """operator.attrgetter, reading each (dotted) name through the attribute guard."""
    from sandbox import guards

    paths = [guards.exact_str(n).split(".") for n in names]

    def get(obj: Any, path: list[str]) -> Any:
        for part in path:
            obj = guards.guarded_getattr(obj, part)
        return obj

    if len(paths) == 1:
        return lambda obj: get(obj, paths[0])
    return lambda obj: tuple(get(obj, path) for path in paths)


def _methodcaller(name: Any, /, *args: Any, **kwargs: Any) -> Callable[[Any], Any]:
    """operator.methodcaller, finding the method through the attribute guard."""
    from sandbox import guards

    method = guards.exact_str(name)
    return lambda obj: guards.guarded_getattr(obj, method)(*args, **kwargs)


def _make_cached_property() -> type:
    """functools.cached_property, whose `__get__` stores into `instance.__dict__` directly: the
    instance must be one plugin code may change (`cp.__get__(some_runtime_object)` would be a
    write past the guard)."""
    import functools

    from sandbox import guards

    class cached_property(functools.cached_property):  # type: ignore[type-arg]  # noqa: N801
        __doc__ = functools.cached_property.__doc__

        def __get__(self, instance: Any, owner: Any = None) -> Any:
            if instance is not None and not guards.may_write(instance):
                raise guards.SecurityError(
                    "cached_property stores into the instance: only objects your plugin may change"
                )
            return super().__get__(instance, owner)

    cached_property.__module__ = "functools"
    return cached_property


def _if_writable(func: Callable[..., Any]) -> Callable[..., Any]:
    """typing.final & co. set a marker attribute on what they decorate: only on the plugin's."""
    from sandbox import guards

    def checked(arg: Any) -> Any:
        return func(arg) if guards.may_write(arg) else arg

    checked.__name__ = checked.__qualname__ = func.__name__
    checked.__doc__ = func.__doc__
    return checked


# Time zones, loaded in the fork server: the jailed child has no file system.
_ZONES: dict[str, Any] = {}


def preload_zones() -> None:
    import zoneinfo

    for key in sorted(zoneinfo.available_timezones()):
        try:
            _ZONES[key] = zoneinfo.ZoneInfo(key)  # kept alive: ZoneInfo's cache is weak
        except Exception:  # noqa: BLE001 - a broken zone file is skipped, not fatal
            continue


def _available_timezones() -> set[str]:
    return set(_ZONES)


def wrapped_callables() -> dict[str, Callable[..., Any]]:
    import abc
    import functools
    import typing

    return {
        "dataclasses.dataclass": _dataclass,
        "dataclasses.make_dataclass": _make_dataclass,
        "functools.update_wrapper": _update_wrapper,
        "functools.wraps": _wraps,
        "functools.cached_property": _make_cached_property(),
        "functools.total_ordering": _plugin_class_only(
            functools.total_ordering, "functools.total_ordering"
        ),
        "abc.update_abstractmethods": _plugin_class_only(
            abc.update_abstractmethods, "abc.update_abstractmethods"
        ),
        "operator.setitem": _setitem,
        "operator.attrgetter": _attrgetter,
        "operator.methodcaller": _methodcaller,
        "operator.delitem": _delitem,
        "typing.final": _if_writable(typing.final),
        "typing.no_type_check": _if_writable(typing.no_type_check),
        "typing.runtime_checkable": _if_writable(typing.runtime_checkable),
        "zoneinfo.available_timezones": _available_timezones,
    }


# Modules that allowed modules import lazily at run time (from their own code, with the real
# import system): imported in the fork server so that the jailed child never reads a file.
PRELOAD_EXTRA = (
    "_strptime",
    "xml.parsers.expat",
    "encodings.latin_1",
    "encodings.ascii",
    "encodings.cp1252",
    "encodings.utf_16",
    "encodings.utf_32",
    "encodings.iso8859_15",
    "encodings.idna",
)


class ImportGuard:
    """A guarded `__import__`: allowlisted modules only, each as a read-only view; a dotted
    import binds its top package as a view holding the allowed submodules."""

    def __init__(self, allowed: Iterable[str] = ALLOWED_MODULES) -> None:
        self._allowed = frozenset(allowed)
        self._views: dict[str, ModuleView] = {}
        self._wrapped: dict[str, Callable[..., Any]] | None = None

    @property
    def allowed(self) -> frozenset[str]:
        return self._allowed

    def preload(self) -> None:
        """Import every allowed module now (in the warm fork server), so a jailed child with no
        filesystem access never needs to read a file to import."""
        from sandbox import guards

        for name in sorted(self._allowed):
            self.view(name)
        for name in PRELOAD_EXTRA:
            try:
                importlib.import_module(name)
            except ImportError:
                continue
        preload_zones()
        guards.install_copy_guard()

    def allows(self, name: str, fromlist: Iterable[str] = ()) -> bool:
        if name in self._allowed:
            return True
        items = list(fromlist)
        return bool(items) and all(f"{name}.{item}" in self._allowed for item in items)

    def view(self, name: str) -> ModuleView:
        """The view bound by `from NAME import ...`: the module's names (if it is allowed) and
        its allowed submodules."""
        if name not in self._views:
            from sandbox import guards

            if self._wrapped is None:
                self._wrapped = wrapped_callables()
            attrs: dict[str, Any] = {}
            if name in self._allowed:
                attrs = public_attrs(name, self._wrapped)
            prefix = name + "."
            for sub in self._allowed:
                if sub.startswith(prefix):
                    head = sub[len(prefix) :].split(".")[0]
                    attrs[head] = self.view(prefix + head)
            view = make_view(name, attrs)
            guards.protect(view, *attrs.values())
            self._views[name] = view
        return self._views[name]

    def __call__(
        self,
        name: Any,
        globals: Any = None,
        locals: Any = None,
        fromlist: Any = (),
        level: Any = 0,
    ) -> Any:
        from sandbox import guards

        name = guards.exact_str(name, "module name")
        if name in INTERNAL_IMPORTS and level == 0:
            # Imported lazily by an allowed module's C code (datetime.strptime), never by plugin
            # code: the compile step refuses the name.
            return importlib.import_module(name)
        items = [guards.exact_str(item, "imported name") for item in (fromlist or ())]
        if level != 0 or not self.allows(name, items):
            raise ImportError(f"import of '{name}' is not allowed in plugins")
        if items:
            return self.view(name)
        return self.view(name.split(".")[0])
