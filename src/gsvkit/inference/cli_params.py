"""Command-line options derived from a pydantic parameter model (`SynthesisParams`): one definition of each.

`with_options(SynthesisParams)` adds one `--option` per field to a typer command, with the field's description
and default in its help. Every option defaults to "not given" (None): the command receives only the values the
user typed, in a `params` dict, and the voice or the model decides the rest. Adding a field to the model adds
the option.
"""

from __future__ import annotations

import functools
import inspect
import types
import typing
from collections.abc import Callable
from typing import Annotated, Any, Literal

import typer
from pydantic import BaseModel


def _option_type(annotation: Any) -> Any:
    """The plain type typer parses: Optional unwrapped, a Literal of strings read as str."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        annotation = args[0]
    if typing.get_origin(annotation) is Literal:
        return str
    return annotation


def _help(field: Any) -> str:
    text = field.description or ""
    args = typing.get_args(field.annotation)
    if typing.get_origin(field.annotation) is Literal:
        text += f" ({', '.join(map(str, args))})"
    return f"{text} [default: {field.default}]" if field.default is not None else text


def option_parameters(model: type[BaseModel]) -> list[inspect.Parameter]:
    """One keyword parameter per field of `model`, typed for typer, defaulting to None."""
    out = []
    for name, field in model.model_fields.items():
        kind = _option_type(field.annotation)
        out.append(
            inspect.Parameter(
                name,
                inspect.Parameter.KEYWORD_ONLY,
                default=None,
                annotation=Annotated[kind | None, typer.Option(help=_help(field), show_default=False)],
            )
        )
    return out


def with_options(model: type[BaseModel]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate a command taking `params: dict` so that typer offers `model`'s fields as options."""

    def wrap(func: Callable[..., Any]) -> Callable[..., Any]:
        sig = inspect.signature(func, eval_str=True)
        own = [p for p in sig.parameters.values() if p.name != "params"]
        fields = option_parameters(model)
        names = {p.name for p in fields}

        @functools.wraps(func)
        def command(**kwargs: Any) -> Any:
            params = {k: kwargs.pop(k) for k in list(kwargs) if k in names and kwargs[k] is not None}
            for k in names:
                kwargs.pop(k, None)
            return func(**kwargs, params=params)

        command.__signature__ = sig.replace(parameters=own + fields)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in own + fields}
        return command

    return wrap
