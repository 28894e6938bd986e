"""The reference of every config key, made from the schema itself (the docs site's
"Config keys" page is this text), so that it cannot drift from what ``train`` accepts.

Each section is a table: the dotted key, its type, its default (none: required). A key
whose value is one of several sections (``data``: one per ``source``) gets a table per
variant. Imports no TensorFlow.

Example:

    >>> from keepbest.config.reference import config_reference
    >>> text = config_reference()
    >>> "| `checkpoint.monitor` |" in text, "## `data` with `source: npy`" in text
    (True, True)
"""

from __future__ import annotations

import json
import pathlib
import types
import typing
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from keepbest.config.schema import ExperimentConfig


def config_reference() -> str:
    """Markdown: one table per section of ``ExperimentConfig``, in the schema's order."""
    tables: list[str] = []
    _section(ExperimentConfig, "", "Top level", tables)
    return "\n".join(tables)


def _section(
    model: type[BaseModel], prefix: str, title: str, tables: list[str], context: str = ""
) -> None:
    rows, nested = [], []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        variants = _sections_in(field.annotation)
        if variants:
            nested.append((key, variants))
            rows.append((key, "section" if len(variants) == 1 else "one of the sections below", ""))
            continue
        rows.append((key, _type_text(field.annotation), _default_text(field)))
    lines = [f"## {title}", "", "| key | type | default |", "|---|---|---|"]
    lines += [f"| `{key}` | {kind} | {default} |" for key, kind, default in rows]
    tables.append("\n".join(lines) + "\n")
    for key, variants in nested:
        for variant in variants:
            source = variant.model_fields.get("source")
            which = _literal(source.annotation) if source is not None else None
            heading = f"`{key}`" + (f" with `source: {which}`" if which else "")
            if context and not which:
                heading += f" ({context})"
            _section(variant, f"{key}.", heading, tables, f"source: {which}" if which else context)


def _sections_in(annotation: Any) -> list[type[BaseModel]]:
    """The config sections a field holds (several for a union of them), else []."""
    annotation = _unwrap(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    arguments = typing.get_args(annotation) if _is_union(annotation) else ()
    found = [a for a in arguments if isinstance(a, type) and issubclass(a, BaseModel)]
    rest = [a for a in arguments if a is not type(None) and a not in found]
    return found if found and not rest else []


def _unwrap(annotation: Any) -> Any:
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation


def _is_union(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (typing.Union, types.UnionType)


def _literal(annotation: Any) -> str | None:
    values = typing.get_args(_unwrap(annotation))
    return ", ".join(str(v) for v in values) if values else None


def _type_text(annotation: Any) -> str:
    annotation = _unwrap(annotation)
    origin, arguments = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return " \\| ".join(f"`{v}`" for v in arguments)
    if _is_union(annotation):
        return " \\| ".join(_type_text(a) for a in arguments)
    if origin in (list, tuple, dict):
        inner = ", ".join(_type_text(a) for a in arguments if a is not Ellipsis)
        return f"{origin.__name__}[{inner}]"
    names = {type(None): "null", Any: "any", pathlib.Path: "path"}
    if annotation in names:
        return names[annotation]
    return getattr(annotation, "__name__", str(annotation))


def _default_text(field) -> str:
    if field.default is not PydanticUndefined:
        value = field.default
    elif field.default_factory is not None:
        value = field.default_factory()
    else:
        return "required"
    if isinstance(value, BaseModel):
        return ""
    if isinstance(value, pathlib.Path):
        value = str(value)
    return f"`{json.dumps(value)}`"
