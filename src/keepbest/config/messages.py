"""Pydantic's validation errors as keepbest's messages: one line per problem, each with
its dotted path (``data.validation.split``), what is wrong, the bad value and a hint
(a near-miss key, the data source that has the key, the section where it belongs).

Example:

    >>> from pydantic import ValidationError
    >>> from keepbest.config.messages import describe_errors
    >>> from keepbest.config.schema import ExperimentConfig
    >>> raw = {"name": "x", "data": {"source": "digits"}, "trian": {}}
    >>> try:
    ...     ExperimentConfig.model_validate(raw)
    ... except ValidationError as exc:
    ...     print(describe_errors(exc))
    ["trian: unknown key; did you mean 'train'?"]
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from typing import Annotated, Any, Union

from pydantic import BaseModel, ValidationError

from keepbest.config.references import did_you_mean
from keepbest.config.schema import SCRIPT, ExperimentConfig, ValidationData

# What a member of a plain (untagged) union expects, by the first word of its error type.
_EXPECTED = {
    "bool": ["true", "false"],
    "int": ["an integer"],
    "float": ["a number"],
    "string": ["a string"],
    "list": ["a list"],
    "dict": ["a mapping"],
}


def describe_errors(exc: ValidationError) -> list[str]:
    """One line per problem: dotted path, what is wrong, the bad value, a hint.

    The errors pydantic reports for each member of a plain union (``true``, ``false`` or
    ``'auto'``) are one problem, so they become one line.
    """
    entries: list[str | list[dict]] = []
    unions: dict[str, list[dict]] = {}
    for error in exc.errors(include_url=False):
        path, parent, in_union = _walk(error["loc"])
        dotted = _dotted(path)
        if not in_union:
            entries.append(_describe(dotted, path, parent, error))
        elif dotted in unions:
            unions[dotted].append(error)
        else:
            unions[dotted] = [error]
            entries.append(unions[dotted])
    return [e if isinstance(e, str) else _describe_union(e) for e in entries]


def _describe(dotted: str, path: list, parent: type[BaseModel] | None, error: dict) -> str:
    kind, ctx, given = error["type"], error.get("ctx") or {}, error.get("input")
    if kind == "extra_forbidden":
        return f"{dotted}: unknown key{_unknown_key_hint(str(path[-1]), parent)}"
    if kind == "missing":
        return f"{dotted}: required, but not given"
    if kind == "union_tag_invalid":
        tags = re.findall(r"'([^']+)'", str(ctx.get("expected_tags", "")))
        tags = [tag for tag in tags if tag != SCRIPT]  # objects given in Python, not YAML
        hint = did_you_mean(str(ctx.get("tag")), tags)
        return (
            f"{dotted}.source: unknown source {ctx.get('tag')!r}; expected one of "
            f"{', '.join(tags)}{hint}"
        )
    if kind == "union_tag_not_found":
        named = [tag for tag in _data_sources() if tag != SCRIPT]
        return f"{dotted}.source: required, one of {', '.join(named)}"
    if kind == "literal_error":
        options = re.findall(r"'([^']+)'", str(ctx.get("expected", "")))
        hint = did_you_mean(str(given), options)
        return f"{dotted}: must be one of {', '.join(options)} (got {given!r}){hint}"
    message, sep, hint = str(error["msg"]).removeprefix("Value error, ").partition("; did you")
    return f"{dotted}: {message} (got {short_repr(given)}){sep}{hint}"


def _describe_union(errors: list[dict]) -> str:
    path, _, _ = _walk(errors[0]["loc"])
    options: list[str] = []
    for error in errors:
        if error["type"] == "literal_error":
            expected = str((error.get("ctx") or {}).get("expected", ""))
            options += [f"'{o}'" for o in re.findall(r"'([^']+)'", expected)]
        else:
            options += _EXPECTED.get(error["type"].split("_")[0], [str(error["msg"])])
    given = errors[0].get("input")
    hint = did_you_mean(str(given), [o.strip("'") for o in options])
    choices = f"{', '.join(options[:-1])} or {options[-1]}" if len(options) > 1 else options[0]
    return f"{_dotted(path)}: must be {choices} (got {short_repr(given)}){hint}"


def _unknown_key_hint(key: str, parent: type[BaseModel] | None) -> str:
    """The data source that has this key, a near-miss in the same section, the section
    that has a key like it, or else the known keys."""
    fields = list(parent.model_fields) if parent else []
    sources = _data_sources()
    if parent in sources.values():
        owners = [tag for tag, cls in sources.items() if key in cls.model_fields]
        if owners:
            return f"; {key!r} is a key of source {' or '.join(owners)}, not of this source"
    hint = did_you_mean(key, fields)
    if hint:
        return hint
    elsewhere = {
        f"{section}.{name}": name
        for section, cls in _sections().items()
        if cls is not parent
        for name in cls.model_fields
    }
    close = difflib.get_close_matches(key, list(elsewhere.values()), n=1)
    if close:
        found = next(dotted for dotted, name in elsewhere.items() if name == close[0])
        return f"; did you mean '{found}'?"
    return f"; known keys: {', '.join(fields)}"


def _sections() -> dict[str, type[BaseModel]]:
    """Every section of the schema by its dotted name (each data source's as ``data``)."""
    found: dict[str, type[BaseModel]] = {"": ExperimentConfig}
    for name, field in ExperimentConfig.model_fields.items():
        model = _as_model(field.annotation)
        if model is not None and name != "data":
            found[name] = model
    found["data.validation"] = ValidationData
    return found | {f"data[{tag}]": cls for tag, cls in _data_sources().items()}


def _data_sources() -> dict[str, type[BaseModel]]:
    return _union_members(ExperimentConfig.model_fields["data"].annotation)


def short_repr(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _dotted(path: list) -> str:
    """``data.validation.split``, with list positions as ``metrics[1]``."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else str(part)
    return text or "(top level)"


def _walk(loc: tuple) -> tuple[list, type[BaseModel] | None, bool]:
    """Follow a pydantic error location through the schema.

    Returns the user-facing path (without the tags pydantic inserts for unions), the
    section class that holds the last key (for "did you mean"), and whether the error
    is one member's of a plain union (one of several errors for the same value).
    """
    path: list = []
    annotation: Any = ExperimentConfig
    parent: type[BaseModel] | None = ExperimentConfig
    in_union = False
    for part in loc:
        members = _union_members(annotation)
        if members and isinstance(part, str) and part in members:
            annotation = members[part]  # a data source's tag
            continue
        model = _as_model(annotation)
        if model is not None:
            parent = model
            field = model.model_fields.get(str(part))
            annotation = field.annotation if field else None
            path.append(part)
        elif len(_flatten(annotation)) > 1 and isinstance(part, str):
            in_union, annotation = True, None  # the name of the member pydantic tried
        else:
            path.append(part)
            annotation = None
    return path, parent, in_union


def _as_model(annotation: Any) -> type[BaseModel] | None:
    for candidate in _flatten(annotation):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _union_members(annotation: Any) -> dict[str, type[BaseModel]]:
    """For a tagged union of sections, map each ``source`` tag to its class."""
    members = {}
    candidates = _flatten(annotation)
    if len(candidates) < 2:
        return {}
    for candidate in candidates:
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            source = candidate.model_fields.get("source")
            for tag in typing.get_args(source.annotation) if source else ():
                members[tag] = candidate
    return members


def _flatten(annotation: Any) -> list:
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _flatten(typing.get_args(annotation)[0])
    if origin is Union or isinstance(annotation, types.UnionType):
        return [c for arg in typing.get_args(annotation) for c in _flatten(arg)]
    return [annotation]
