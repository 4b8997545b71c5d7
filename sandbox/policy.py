"""Layer 1: compile plugin code with RestrictedPython under this project's policy, and build
the globals it runs with.

Plugin code is ordinary Python: classes with special methods, `super()`, properties,
dataclasses, enums, annotations, `self.n += 1`, `counts[k] += 1`, `_private` helpers. What is
refused is what leads out of the language (SECURITY.md, "Layer 1", states the rule): reading
dunder attributes that reach frames, code, globals, builtins and class graphs; `_` names of
objects the plugin did not define; str.format's unguarded walks; eval/exec/compile/open; and
the names of the guards themselves. Every refused construct of a file is reported at once, each
with its line and what to write instead.

This layer is not the security boundary (the process jail is); SECURITY.md lists which escape
classes it stops and which layer stops the rest.
"""

from __future__ import annotations

import ast
import re
import types
import warnings
from collections.abc import Callable
from typing import Any

from RestrictedPython.transformer import (
    INSPECT_ATTRIBUTES,
    IOPERATOR_TO_STR,
    RestrictingNodeTransformer,
    copy_locations,
)

from sandbox import guards, views
from sandbox.guards import SecurityError
from sandbox.views import ALLOWED_MODULES, ImportGuard

__all__ = [
    "ALLOWED_MODULES",
    "GUARD_NAMES",
    "ImportGuard",
    "PluginCodeError",
    "PreparedGlobals",
    "SecurityError",
    "check_source",
    "compile_plugin",
    "plugin_code_problems",
    "make_globals",
]

# Names the transformed code calls (and RestrictedPython's print collector): a plugin binding
# one of them would replace a guard in its own scope, so every binding of them is refused.
GUARD_NAMES = frozenset(
    {
        "_getattr_",
        "_getitem_",
        "_getiter_",
        "_write_",
        "_inplacevar_",
        "_apply_",
        "_print_",
        "_print",
        "_unpack_sequence_",
        "_iter_unpack_sequence_",
        "__builtins__",
        "__metaclass__",
        "__import__",
        "__build_class__",
    }
)
_TEMP_NAME = re.compile(r"_tmp\d+")
# Dunder names a plugin may not bind (class bodies and modules may bind others: __slots__,
# __hash__ = None, __all__, special methods).
_UNBINDABLE_DUNDERS = frozenset(
    {
        "__name__",
        "__class__",
        "__classcell__",
        "__dict__",
        "__annotations__",
        "__module__",
        "__qualname__",
        "__mro__",
        "__bases__",
        "__globals__",
        "__code__",
        "__closure__",
        "__loader__",
        "__spec__",
        "__file__",
        "__path__",
        "__weakref__",
    }
)


class PluginCodeError(Exception):
    """Plugin code that cannot be loaded: a syntax error or refused constructs, one per line of
    the message, each naming its line."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


# -- messages ----------------------------------------------------------------------------------

_IMPORT_HINTS = {
    "os": "settings come from meta.config; there is no file system or environment",
    "sys": "there is no interpreter state to reach; return values and use meta.logger",
    "requests": "use meta.fetch(url, ...) for HTTP",
    "urllib.request": "use meta.fetch(url, ...) for HTTP",
    "http.client": "use meta.fetch(url, ...) for HTTP",
    "socket": "use meta.fetch(url, ...) for HTTP",
    "logging": "use meta.logger.info(...) or print()",
    "pathlib": "there is no file system; keep data in meta.storage",
    "subprocess": "plugins cannot start processes",
    "threading": "plugins run one task at a time, synchronously",
    "asyncio": "plugins run synchronously; meta.fetch is a plain call",
    "pickle": "use json to serialise data",
    "sqlite3": "keep data in meta.storage",
}


def _import_message(name: str) -> str:
    hint = _IMPORT_HINTS.get(name) or _IMPORT_HINTS.get(name.split(".")[0])
    hint = f"{hint[0].upper()}{hint[1:]}. " if hint else ""
    return (
        f"import of '{name}' is not allowed in plugins. {hint}"
        "See docs/plugins.md for the modules you can import."
    )


def _node_words(node: ast.AST) -> str:
    """A construct in the author's words."""
    words = {
        "AsyncFunctionDef": "'async def'",
        "Await": "'await'",
        "AsyncFor": "'async for'",
        "AsyncWith": "'async with'",
        "TryStar": "'except*'",
        "Match": "'match'",
    }
    return words.get(type(node).__name__, f"this construct ({type(node).__name__.lower()})")


_SUGGESTIONS = {
    "AsyncFunctionDef": "plugins run synchronously: write a plain 'def' (meta.fetch is a plain call)",
    "Await": "plugins run synchronously: call the function directly",
    "AsyncFor": "plugins run synchronously: use a plain 'for'",
    "AsyncWith": "plugins run synchronously: use a plain 'with'",
    "TryStar": "catch the group with 'except ExceptionGroup as group:' and look at group.exceptions",
    "Match": "use if/elif with isinstance() and ==",
}


# -- the transformer ---------------------------------------------------------------------------


class PluginTransformer(RestrictingNodeTransformer):
    """RestrictedPython's transformer with this project's policy: ordinary classes, augmented
    assignment through the guards, annotations, author-worded errors."""

    def __init__(self, import_guard: ImportGuard, future_annotations: bool) -> None:
        super().__init__()
        self.import_guard = import_guard
        self.future_annotations = future_annotations
        self.problems: list[tuple[int, str]] = []
        self.bound_names: set[str] = set()
        self._class_bodies: list[ast.ClassDef] = []
        self._class_names: list[str] = []  # enclosing classes, for private-name mangling

    # errors: kept with their line, reworded where RestrictedPython words them
    def error(self, node: ast.AST, info: str) -> None:
        line = getattr(node, "lineno", 0) or 0
        self.problems.append((line, info))

    def not_allowed(self, node: ast.AST) -> None:
        name = type(node).__name__
        suggestion = _SUGGESTIONS.get(name, "write it another way")
        self.error(node, f"{_node_words(node)} is not supported in plugins: {suggestion}")

    # names
    def check_name(self, node: Any, name: str | None, allow_magic_methods: bool = False) -> None:
        if name is None:
            return
        binding = not isinstance(getattr(node, "ctx", None), ast.Load)
        if name in GUARD_NAMES or _TEMP_NAME.fullmatch(name):
            self.error(
                node,
                f"'{name}' is a name the sandbox uses for its guards: choose another name",
            )
        elif guards.is_dunder(name) and binding and name in _UNBINDABLE_DUNDERS:
            self.error(node, f"'{name}' cannot be assigned in a plugin")
        elif binding and name in ("print", "printed"):
            self.error(
                node,
                f"'{name}' cannot be redefined in a plugin (print() writes the run's log): "
                "choose another name",
            )

    def visit_Name(self, node: ast.Name) -> Any:
        if node.id in ("print", "printed") or not isinstance(node.ctx, ast.Load):
            return super().visit_Name(node)
        self.check_name(node, node.id)
        return node

    # attributes
    def _mangle(self, attr: str) -> str:
        """`self.__x` inside class C means `self._C__x` (CPython mangles it at compile time; the
        guard call below takes the name as a string, so it is mangled here)."""
        if not self._class_names or not attr.startswith("__") or attr.endswith("__"):
            return attr
        owner = self._class_names[-1].lstrip("_")
        return f"_{owner}{attr}" if owner else attr

    def visit_Attribute(self, node: ast.Attribute) -> Any:
        attr = node.attr = self._mangle(node.attr)
        if isinstance(node.ctx, ast.Load):
            if attr in INSPECT_ATTRIBUTES:
                self.error(
                    node,
                    f"'.{attr}' is not allowed: frames and code objects are not available to "
                    "plugins",
                )
            elif (
                guards.is_dunder(attr)
                and attr not in guards.DUNDER_READS
                and (attr not in guards.CHECKED_METHODS and attr not in guards.PLUGIN_DUNDER_READS)
            ):
                self.error(node, f"'.{attr}' cannot be read: {guards.dunder_read_reason(attr)}")
            node = self.node_contents_visit(node)
            new_node = ast.Call(
                func=ast.Name("_getattr_", ast.Load()),
                args=[node.value, ast.Constant(attr)],
                keywords=[],
            )
            copy_locations(new_node, node)
            return new_node
        if guards.is_dunder(attr) and attr not in guards.DUNDER_WRITES:
            self.error(node, f"'.{attr}' cannot be assigned in a plugin")
        node = self.node_contents_visit(node)
        new_value = ast.Call(func=ast.Name("_write_", ast.Load()), args=[node.value], keywords=[])
        copy_locations(new_value, node.value)
        node.value = new_value
        return node

    # calls: builtins that do not exist here are reported at load time, with what to do
    # instead; `f(*args, **kwargs)` goes through `_apply_` (RestrictedPython's convention)
    def visit_Call(self, node: ast.Call) -> Any:
        func = node.func
        if (
            isinstance(func, ast.Name)
            and func.id in guards.MISSING_BUILTINS
            and func.id not in self.bound_names
        ):
            self.error(node, f"{func.id}() is not available: {guards.MISSING_BUILTINS[func.id]}")
        needs_wrap = any(isinstance(a, ast.Starred) for a in node.args) or any(
            k.arg is None for k in node.keywords
        )
        node = self.node_contents_visit(node)
        if needs_wrap:
            node.args.insert(0, node.func)
            node.func = ast.Name("_apply_", ast.Load())
            copy_locations(node.func, node.args[0])
        return node

    # imports
    def check_import_names(self, node: ast.Import | ast.ImportFrom) -> Any:
        if isinstance(node, ast.ImportFrom):
            module = node.module or ""
            names = [a.name for a in node.names if a.name != "*"]
            if node.level:
                self.error(node, "relative imports are not allowed: a plugin is a single file")
            elif module in self.import_guard.allowed:
                available = views.view_attrs(self.import_guard.view(module))
                for name in names:
                    if name not in available:
                        self.error(
                            node,
                            f"cannot import '{name}' from '{module}': it is not available to "
                            "plugins (see docs/plugins.md)",
                        )
            elif not self.import_guard.allows(module, names):
                missing = [n for n in names if f"{module}.{n}" not in self.import_guard.allowed]
                shown = f"{module}.{missing[0]}" if self._is_package(module) and missing else module
                self.error(node, _import_message(shown))
        else:
            for alias in node.names:
                if not self.import_guard.allows(alias.name):
                    self.error(node, _import_message(alias.name))
        for alias in node.names:
            if alias.name == "*":
                self.error(node, "'import *' is not allowed: import the names you use")
            bound = alias.asname or alias.name.split(".")[0]
            if alias.name != "*":
                self._check_binding(node, bound)
        return self.node_contents_visit(node)

    def _is_package(self, module: str) -> bool:
        return any(name.startswith(module + ".") for name in self.import_guard.allowed)

    def _check_binding(self, node: Any, name: str) -> None:
        store = ast.Name(name, ast.Store())
        copy_locations(store, node)
        self.check_name(store, name)

    def check_function_argument_names(self, node: Any) -> None:
        args = node.args
        for arg in [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]:
            if arg is not None:
                self._check_binding(node, arg.arg)

    # definitions
    def visit_FunctionDef(self, node: ast.FunctionDef) -> Any:
        in_class = bool(self._class_bodies) and node in self._class_bodies[-1].body
        if not (in_class and guards.is_dunder(node.name)):
            self._check_binding(node, node.name)
        elif node.name in _UNBINDABLE_DUNDERS:
            self.error(node, f"'{node.name}' cannot be defined in a plugin")
        self.check_function_argument_names(node)
        self._skip_annotations(node)
        saved, self._class_bodies = self._class_bodies, []
        try:
            with self.print_info.new_print_scope():
                node = self.node_contents_visit(node)
                self.inject_print_collector(node)
        finally:
            self._class_bodies = saved
        return node

    def visit_Lambda(self, node: ast.Lambda) -> Any:
        self.check_function_argument_names(node)
        return self.node_contents_visit(node)

    def _skip_annotations(self, node: ast.FunctionDef) -> None:
        """Under `from __future__ import annotations` annotations are never evaluated (they
        become strings): leave them untransformed so the strings read as written."""
        if not self.future_annotations:
            return
        args = node.args
        for arg in [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]:
            if arg is not None and arg.annotation is not None:
                arg.annotation = _Verbatim.wrap(arg.annotation)
        if node.returns is not None:
            node.returns = _Verbatim.wrap(node.returns)

    def visit_ClassDef(self, node: ast.ClassDef) -> Any:
        self._check_binding(node, node.name)
        self._class_bodies.append(node)
        self._class_names.append(node.name)
        try:
            node = self.node_contents_visit(node)
        finally:
            self._class_bodies.pop()
            self._class_names.pop()
        if not any(k.arg == "metaclass" for k in node.keywords):
            # RestrictedPython's convention: classes are built by __metaclass__ (type), through
            # the guarded __build_class__ that records them as the plugin's.
            meta = ast.keyword(arg="metaclass", value=ast.Name("__metaclass__", ast.Load()))
            copy_locations(meta, node)
            node.keywords.append(meta)
        return node

    def visit_Nonlocal(self, node: ast.Nonlocal) -> Any:
        for name in node.names:
            self._check_binding(node, name)
        return node

    def visit_Global(self, node: ast.Global) -> Any:
        for name in node.names:
            self._check_binding(node, name)
        return node

    # annotations: `x: int = 0`, dataclass fields
    def visit_AnnAssign(self, node: ast.AnnAssign) -> Any:
        if self.future_annotations:
            node.annotation = _Verbatim.wrap(node.annotation)
        return self.node_contents_visit(node)

    # augmented assignment: every operand evaluated once, reads and writes through the guards
    def visit_AugAssign(self, node: ast.AugAssign) -> Any:
        op = ast.Constant(IOPERATOR_TO_STR[type(node.op)])
        target = node.target
        if isinstance(target, ast.Name):
            return super().visit_AugAssign(node)
        if isinstance(target, ast.Attribute):
            target.attr = self._mangle(target.attr)
            if guards.is_dunder(target.attr) and target.attr not in guards.DUNDER_WRITES:
                self.error(node, f"'.{target.attr}' cannot be assigned in a plugin")
            obj = self.visit(target.value)
            value = self.visit(node.value)
            tmp = self.gen_tmp_name()
            statements: list[ast.stmt] = [
                ast.Assign(targets=[ast.Name(tmp, ast.Store())], value=obj),
                ast.Assign(
                    targets=[
                        ast.Attribute(
                            value=_call("_write_", ast.Name(tmp, ast.Load())),
                            attr=target.attr,
                            ctx=ast.Store(),
                        )
                    ],
                    value=_call(
                        "_inplacevar_",
                        op,
                        _call("_getattr_", ast.Name(tmp, ast.Load()), ast.Constant(target.attr)),
                        value,
                    ),
                ),
            ]
        elif isinstance(target, ast.Subscript):
            obj = self.visit(target.value)
            key = target.slice
            if isinstance(key, ast.Slice):
                key = _call(
                    "slice",
                    *(part or ast.Constant(None) for part in (key.lower, key.upper, key.step)),
                )
            key = self.visit(key)
            value = self.visit(node.value)
            tmp_obj, tmp_key = self.gen_tmp_name(), self.gen_tmp_name()
            statements = [
                ast.Assign(targets=[ast.Name(tmp_obj, ast.Store())], value=obj),
                ast.Assign(targets=[ast.Name(tmp_key, ast.Store())], value=key),
                ast.Assign(
                    targets=[
                        ast.Subscript(
                            value=_call("_write_", ast.Name(tmp_obj, ast.Load())),
                            slice=ast.Name(tmp_key, ast.Load()),
                            ctx=ast.Store(),
                        )
                    ],
                    value=_call(
                        "_inplacevar_",
                        op,
                        _call(
                            "_getitem_",
                            ast.Name(tmp_obj, ast.Load()),
                            ast.Name(tmp_key, ast.Load()),
                        ),
                        value,
                    ),
                ),
            ]
        else:  # pragma: no cover - the grammar has no other targets
            self.not_allowed(node)
            return node
        for statement in statements:
            ast.copy_location(statement, node)
            ast.fix_missing_locations(statement)
        return statements

    def visit__Verbatim(self, node: Any) -> Any:
        return node.inner  # left as written


class _Verbatim(ast.expr):
    """An annotation left as written (not transformed): unwrapped after the transform."""

    _fields = ("inner",)

    @staticmethod
    def wrap(inner: ast.expr) -> Any:
        wrapper = _Verbatim()
        wrapper.inner = inner  # type: ignore[attr-defined]
        return wrapper


def _call(name: str, *args: ast.expr) -> ast.Call:
    return ast.Call(func=ast.Name(name, ast.Load()), args=list(args), keywords=[])


def _module_bindings(tree: ast.AST) -> set[str]:
    """Every name the plugin binds anywhere (so a plugin's own `open()` is not reported as the
    missing builtin)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, ast.alias):
            names.add(node.asname or node.name.split(".")[0])
    return names


def _has_future_annotations(tree: ast.Module) -> bool:
    for stmt in tree.body:
        if isinstance(stmt, ast.ImportFrom) and stmt.module == "__future__":
            if any(alias.name == "annotations" for alias in stmt.names):
                return True
        elif not (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant)):
            break
    return False


_DEFAULT_GUARD = ImportGuard()


# Source nested past what the parser, the transformer or the compiler can recurse through (a
# 20,000-term expression): a refusal like any other, never an exception that ends the fork server.
_TOO_DEEP = (RecursionError, MemoryError, ValueError)


def _too_deep(filename: str, exc: BaseException) -> PluginCodeError:
    return PluginCodeError([f"{filename}: nested too deeply to compile ({exc})"])


def _transform(source: str, filename: str, import_guard: ImportGuard) -> ast.Module:
    try:
        tree = ast.parse(source, filename=filename)
    except SyntaxError as exc:
        raise PluginCodeError([f"{filename}, line {exc.lineno}: syntax error: {exc.msg}"]) from exc
    except _TOO_DEEP as exc:
        raise _too_deep(filename, exc) from exc
    transformer = PluginTransformer(import_guard, _has_future_annotations(tree))
    try:
        transformer.bound_names = _module_bindings(tree)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SyntaxWarning)
            tree = transformer.visit(tree)
    except _TOO_DEEP as exc:
        raise _too_deep(filename, exc) from exc
    if transformer.problems:
        problems = sorted(set(transformer.problems))
        raise PluginCodeError([f"{filename}, line {line}: {text}" for line, text in problems])
    ast.fix_missing_locations(tree)
    return tree


def check_source(
    source: str, filename: str = "main.py", import_guard: ImportGuard | None = None
) -> None:
    """Raise PluginCodeError listing every refused construct of `source` (with its line and a
    suggestion), or return if it would load. Used by `plugins install` and `run`."""
    _transform(source, filename, import_guard or _DEFAULT_GUARD)


def plugin_code_problems(source: str, filename: str = "main.py") -> list[str]:
    """Every refused construct of `source`, one message each (empty when it would load)."""
    try:
        check_source(source, filename)
    except PluginCodeError as exc:
        return exc.problems
    return []


def compile_plugin(
    source: str, filename: str = "main.py", import_guard: ImportGuard | None = None
) -> types.CodeType:
    """Compile plugin source under the policy. Raises PluginCodeError naming every problem.
    `dont_inherit`: the plugin gets only the future flags it asks for, never this module's."""
    tree = _transform(source, filename, import_guard or _DEFAULT_GUARD)
    try:
        return compile(tree, filename, "exec", dont_inherit=True)
    except _TOO_DEEP as exc:
        raise _too_deep(filename, exc) from exc


_PLUGIN_MODULES: set[str] = set()


def _plugin_module(name: str) -> types.ModuleType:
    """The module object whose namespace a plugin runs in, registered in sys.modules as CPython
    would an imported module (dataclasses and enum look classes' modules up there). Named after
    the plugin unless a real module has that name."""
    import sys

    if name in sys.modules and name not in _PLUGIN_MODULES:
        name = f"plugin_{name}"
    module = types.ModuleType(name)
    sys.modules[name] = module
    _PLUGIN_MODULES.add(name)
    return module


class PreparedGlobals:
    """What every plugin module's globals hold but its print sink: the restricted builtins and
    the guards, built once (in the warm fork server, before it forks) instead of in every run.

    `make_globals(..., prepared=...)` copies the guards into a fresh module namespace. The
    builtins dict goes to the first plugin execution in a process as it is (`take_builtins`):
    in a child forked from the fork server that dict is the child's own copy-on-write copy, which
    no other run ever sees, and not copying it spares the child from writing to the pages of the
    150-odd objects it refers to. Any later execution in the same process gets builtins built
    afresh (never a copy of the dict an earlier execution held)."""

    def __init__(self, import_guard: ImportGuard, fetch_error: type | None = None) -> None:
        if fetch_error is None:
            from sandbox.meta import FetchError

            fetch_error = FetchError
        self.import_guard = import_guard
        self.fetch_error = fetch_error
        self.builtins: dict[str, Any] = guards.make_builtins(import_guard, fetch_error)
        self.guards: dict[str, Any] = {
            "__metaclass__": type,
            "_unpack_sequence_": _unpack_sequence,
            "_iter_unpack_sequence_": _iter_unpack_sequence,
            **guards.GUARDS,
        }
        self._builtins_taken = False

    def take_builtins(self) -> dict[str, Any]:
        """The builtins for one execution: the prepared dict itself the first time in this
        process, built afresh after that (no two executions in one process share one)."""
        if self._builtins_taken:
            return guards.make_builtins(self.import_guard, self.fetch_error)
        self._builtins_taken = True
        return self.builtins


def make_globals(
    import_guard: ImportGuard,
    print_factory: Callable[..., Any],
    name: str = "plugin",
    fetch_error: type | None = None,
    *,
    prepared: PreparedGlobals | None = None,
) -> dict[str, Any]:
    """Fresh globals for one execution of a plugin module, with every guard RestrictedPython's
    transformed code calls. With `prepared` (built once for `import_guard`), the builtins and
    guards are copied from it rather than built again."""
    if prepared is None or prepared.import_guard is not import_guard or fetch_error is not None:
        prepared = PreparedGlobals(import_guard, fetch_error)
    glb = _plugin_module(name).__dict__
    glb.update(prepared.guards)
    glb["__builtins__"] = prepared.take_builtins()
    glb["_print_"] = print_factory
    guards.enter_plugin_globals(glb)
    return glb


def plugin_runtime_names() -> dict[str, Any]:
    """What `import plugin_runtime` gives a plugin: the errors the docs name."""
    from sandbox.meta import FetchError

    return {"FetchError": FetchError, "SecurityError": SecurityError}


def _unpack_sequence(*args: Any) -> Any:
    from RestrictedPython.Guards import guarded_unpack_sequence

    return guarded_unpack_sequence(*args)


def _iter_unpack_sequence(*args: Any) -> Any:
    from RestrictedPython.Guards import guarded_iter_unpack_sequence

    return guarded_iter_unpack_sequence(*args)
