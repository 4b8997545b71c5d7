"""Click options the commands share in shape: an option whose default lives elsewhere (the
node's settings, the chaos options, retention) and is shown in --help."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Setting:
    """One option: `flag` sets the parameter `name` (a field of the object its default comes
    from), of click type `kind`; `shown`: the default is printed in --help."""

    flag: str
    name: str
    kind: Any
    help: str
    shown: bool = True
    metavar: str | None = None


def settings_options(settings: Sequence[Setting], defaults: object) -> Callable[[F], F]:
    """Decorate a command with an option per `Setting`, in order, each defaulting to the
    attribute of `defaults` it names (so a default has one home)."""

    def decorate(fn: F) -> F:
        for s in reversed(settings):
            fn = click.option(
                s.flag,
                s.name,
                type=s.kind,
                default=getattr(defaults, s.name),
                show_default=s.shown,
                metavar=s.metavar,
                help=s.help,
            )(fn)
        return fn

    return decorate


def limit_option(default: int, help: str) -> Callable[[F], F]:
    """`--limit N`: how many rows a listing prints."""
    return click.option(
        "--limit",
        type=click.IntRange(min=1),
        default=default,
        show_default=True,
        metavar="N",
        help=help,
    )
