"""How a YAML file and ``--set`` overrides become one validated ``ExperimentConfig``.

YAML is parsed safely (no tags that run code), a key given twice is an error (YAML would
keep the last one silently), every ``--set KEY=VALUE`` is parsed as YAML and applied to
the mapping before validation, and every problem is reported at once, one line each,
prefixed with the file it is about, or with ``--set`` for a key an override gave.

Aliases (``*name``) may repeat a value, but the document they expand to is bounded: at
most ``MAX_EXPANDED_VALUES`` values beyond what is written out, and no alias inside its
own anchor. A "billion laughs" is refused in milliseconds, before anything is built from
it; so is nesting deeper than ``MAX_DEPTH``.

Example:

    >>> from keepbest.config import load_config
    >>> cfg = load_config("configs/quickstart.yaml", overrides=["train.epochs=3"])
    >>> cfg.train.epochs
    3
"""

from __future__ import annotations

import contextlib
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from keepbest.config.messages import describe_errors, short_repr
from keepbest.config.schema import ExperimentConfig
from keepbest.errors import ConfigError, InputError

_MERGE_TAG = "tag:yaml.org,2002:merge"
MAX_EXPANDED_VALUES = 100_000  # values aliases may add to a document (see _expanded_size)
MAX_DEPTH = 100  # nesting levels of a document


class _Bounded(yaml.SafeLoader):
    """PyYAML's safe loader that stops at ``MAX_DEPTH`` levels of nesting, before Python's
    own recursion limit would (PyYAML composes nodes recursively)."""

    def compose_node(self, parent, index):
        self._depth = getattr(self, "_depth", 0) + 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise yaml.composer.ComposerError(
                    None, None, f"nested more than {MAX_DEPTH} levels deep", mark
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _expanded_size(root: yaml.Node) -> tuple[int, int, bool]:
    """(values as written, values once every alias is expanded, whether an alias is
    inside its own anchor); linear in the number of distinct nodes."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()
    cyclic = False

    def size(node: yaml.Node) -> int:
        nonlocal cyclic
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in open_nodes:
            cyclic = True
            return 0
        open_nodes.add(key)
        total = 1
        if isinstance(node, yaml.SequenceNode):
            total += sum(size(item) for item in node.value)
        elif isinstance(node, yaml.MappingNode):
            total += sum(size(k) + size(v) for k, v in node.value)
        open_nodes.discard(key)
        sizes[key] = total
        return total

    expanded = size(root)
    return len(sizes), expanded, cyclic


def _check_flow_depth(text: str) -> None:
    """Refuse ``[[[[...`` nested deeper than ``MAX_DEPTH`` before PyYAML scans it (its
    scanner takes quadratic time over such a run). Brackets inside quoted strings count
    too: no real document nests a hundred of them."""
    depth = 0
    for line_number, line in enumerate(text.splitlines(), start=1):
        for column, char in enumerate(line, start=1):
            if char in "[{":
                depth += 1
                if depth > MAX_DEPTH:
                    where = yaml.Mark("", 0, line_number - 1, column - 1, None, None)
                    raise yaml.MarkedYAMLError(
                        problem=f"nested more than {MAX_DEPTH} levels deep", problem_mark=where
                    )
            elif char in "]}" and depth:
                depth -= 1


def _check_aliases(node: yaml.Node) -> None:
    written, expanded, cyclic = _expanded_size(node)
    if cyclic:
        raise yaml.YAMLError("an alias refers to the value that holds it (a cycle); remove it")
    if expanded - written > MAX_EXPANDED_VALUES:
        raise yaml.YAMLError(
            f"its aliases (*name) expand it to {expanded:,} values, more than "
            f"{MAX_EXPANDED_VALUES:,} beyond the {written:,} written; write the values out, "
            "or use fewer aliases"
        )


def _duplicate_keys(node: yaml.Node, path: str = "", seen: set | None = None) -> list[str]:
    """``a.b: given twice ...`` for each key that one mapping repeats (YAML keeps the last)."""
    seen = set() if seen is None else seen
    if id(node) in seen:  # an alias of a node already checked
        return []
    seen.add(id(node))
    problems = []
    if isinstance(node, yaml.MappingNode):
        first_line: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else "?"
            dotted = f"{path}.{key}" if path else key
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != _MERGE_TAG:
                line = key_node.start_mark.line + 1
                if key in first_line:
                    problems.append(
                        f"{dotted}: key given twice (lines {first_line[key]} and {line}); keep one"
                    )
                first_line.setdefault(key, line)
            problems += _duplicate_keys(value_node, dotted, seen)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            problems += _duplicate_keys(item, f"{path}[{index}]", seen)
    return problems


def _load_yaml(text: str) -> tuple[Any, list[str]]:
    """The document and its duplicate-key problems; ``yaml.YAMLError`` if it is not YAML."""
    _check_flow_depth(text)
    loader = _Bounded(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, []
        _check_aliases(node)
        problems = _duplicate_keys(node)
        return (None if problems else loader.construct_document(node)), problems
    finally:
        loader.dispose()


def _yaml_problem(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
    problem = getattr(exc, "problem", None) or (str(exc).splitlines() or ["unreadable"])[0]
    return f"{where}invalid YAML: {problem}"


def parse_yaml(text: str, origin: str) -> Any:
    """Parse one YAML document; ``ConfigError`` on a syntax error or a repeated key."""
    try:
        raw, problems = _load_yaml(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{origin}: {_yaml_problem(exc)}") from None
    if problems:
        raise ConfigError([f"{origin}: {line}" for line in problems])
    return raw


def apply_override(raw: dict, assignment: str) -> None:
    """Apply one ``--set a.b=c``; the value is parsed as YAML (``3`` is an int).

    Missing sections on the way are created (and then validated like any other key).
    Problems read ``--set KEY: ...`` (``ConfigError``).
    """
    key, sep, text = assignment.partition("=")
    key = key.strip()
    parts = key.split(".")
    if not sep or not all(parts):
        shown = key if key and all(parts) else repr(assignment)
        raise ConfigError(f"--set {shown}: not KEY=VALUE, e.g. --set train.epochs=30")
    value = parse_yaml(text, f"--set {key}: value {short_repr(text)}")
    node = raw
    for depth, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        elif not isinstance(child, dict):
            section = ".".join(parts[: depth + 1])
            raise ConfigError(
                f"--set {key}: cannot set inside '{section}': it is a value "
                f"({short_repr(child)}), not a section"
            )
        node = child
    node[parts[-1]] = value


class Origin(str):
    """Where a config came from: its file's name (``config`` for a mapping), the first
    word of every error about it, and the keys ``--set`` gave, whose errors name the
    ``--set`` instead (``--set optimizer.lr: unknown key ...``), since the file does not
    hold them.

    >>> origin = Origin("exp.yaml", ["optimizer.learnign_rate", "train"])
    >>> origin.locate("optimizer.learnign_rate: unknown key; did you mean 'learning_rate'?")
    "--set optimizer.learnign_rate: unknown key; did you mean 'learning_rate'?"
    >>> origin.locate("train.epohcs: unknown key"), origin.locate("seed: must be an integer")
    ('--set train.epohcs: unknown key', 'exp.yaml: seed: must be an integer')
    >>> str(origin)
    'exp.yaml'
    """

    set_keys: tuple[str, ...]

    def __new__(cls, name: str, set_keys: typing.Iterable[str] = ()) -> Origin:
        origin = super().__new__(cls, name)
        origin.set_keys = tuple(set_keys)
        return origin

    def __reduce__(self):  # pickled (multiprocessing) with its keys
        return (Origin, (str(self), self.set_keys))

    def locate(self, line: str) -> str:
        """``line`` (``dotted.path: problem``) prefixed with where the value came from."""
        if line.startswith("--set "):  # already names its --set
            return line
        path = line.split(": ", 1)[0]
        for key in self.set_keys:
            if path == key or path.startswith((f"{key}.", f"{key}[")):
                return f"--set {line}"
        return f"{self}: {line}"


def read_yaml_file(path: str | Path, what: str) -> Any:
    """The parsed YAML document in the file at ``path`` (``what`` names it in errors: "config
    file", "--grid", ...); ``ConfigError`` if it is missing, a folder, unreadable or not
    YAML. The one reader of keepbest's YAML inputs: a config, a sweep grid, a search space.
    """
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path}: {what} is a folder, not a file")
    if not path.is_file():
        raise ConfigError(f"{path}: {what} not found")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the {what} ({exc})") from None
    return parse_yaml(text, str(path))


def load_config(
    source: str | Path | dict,
    overrides: typing.Sequence[str] = (),
    base_dir: str | Path | None = None,
    check_files: bool = True,
    assigned: typing.Sequence[str] = (),
) -> ExperimentConfig:
    """Read, override and validate a config; raise ``ConfigError`` with every problem.

    ``source`` is a YAML file or an already-parsed mapping. Relative paths resolve against
    the file's folder (or ``base_dir``, by default the working directory, for a mapping).
    ``check_files=False`` accepts data paths that do not exist (a run dir moved elsewhere).
    ``overrides`` are the user's ``--set KEY=VALUE``; ``assigned`` are assignments of the
    same form that keepbest makes itself after them (a sweep's grid values, a trial's
    sampled ones, where a run goes). Every problem line starts with the file's name
    (``config`` for a mapping), or, for a key an override gave, with ``--set`` (``Origin``).
    """
    if isinstance(source, dict):
        raw, name = _deep_copy(source), "config"
        base = Path(base_dir or ".").resolve()
    else:
        path = Path(source)
        name = str(path)
        raw = read_yaml_file(path, "config file")
        base = Path(base_dir).resolve() if base_dir else path.resolve().parent
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise ConfigError(
                f"{name}: expected a mapping of sections (name, data, ...) at the top level, "
                f"got {type(raw).__name__}"
            )
    origin = Origin(name, [a.partition("=")[0].strip() for a in overrides])
    problems = []
    for assignment in [*overrides, *assigned]:
        try:
            apply_override(raw, assignment)
        except ConfigError as exc:
            problems += exc.problems
    if problems:
        raise ConfigError(problems)
    try:
        cfg = ExperimentConfig.model_validate(
            raw, context={"base_dir": base, "check_files": check_files}
        )
    except ValidationError as exc:
        raise ConfigError([origin.locate(line) for line in describe_errors(exc)]) from None
    except ConfigError as exc:
        raise ConfigError([origin.locate(line) for line in exc.problems]) from None
    cfg._base_dir = base
    cfg._origin = origin
    return cfg


@contextlib.contextmanager
def reported_against(cfg: ExperimentConfig) -> Iterator[None]:
    """Prefix the ``InputError``s raised inside with the config's file (or ``--set``), as
    ``load_config`` does (``Origin.locate``).

    Used around the checks that need Keras or the data (builder, optimizer, files'
    contents), so that every problem a config causes reads ``<file>: <dotted path>: ...``.
    """
    try:
        yield
    except InputError as exc:
        if getattr(exc, "origin", None) is not None:  # already located by an inner block
            raise
        origin = cfg.origin if isinstance(cfg.origin, Origin) else Origin(cfg.origin)
        located = type(exc)([origin.locate(line) for line in exc.problems])
        located.origin = cfg.origin
        raise located from None


def config_to_yaml(cfg: ExperimentConfig) -> str:
    """The resolved config as YAML, in the schema's key order (paths as strings)."""
    raw = cfg.model_dump(mode="json")
    raw["data"] = {"source": raw["data"].pop("source"), **raw["data"]}
    return yaml.safe_dump(raw, sort_keys=False)


def _deep_copy(raw: Any) -> Any:
    if isinstance(raw, dict):
        return {k: _deep_copy(v) for k, v in raw.items()}
    if isinstance(raw, list):
        return [_deep_copy(v) for v in raw]
    return raw
