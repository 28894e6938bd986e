"""YAML abuse is refused quickly: aliases that expand past a bound (a "billion laughs"),
an alias inside its own anchor, nesting too deep to parse; ordinary aliases still work."""

from __future__ import annotations

import time

import pytest

from keepbest.config import loading
from keepbest.config.loading import MAX_DEPTH, MAX_EXPANDED_VALUES, parse_yaml
from keepbest.errors import ConfigError


def laughs(levels: int) -> str:
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def refused(text: str) -> str:
    started = time.monotonic()
    with pytest.raises(ConfigError) as caught:
        parse_yaml(text, "f.yaml")
    assert time.monotonic() - started < 2  # milliseconds when the machine is idle
    [line] = caught.value.problems
    return line


def test_a_billion_laughs_is_refused_in_milliseconds():
    line = refused(laughs(10))
    assert line.startswith("f.yaml: invalid YAML: its aliases (*name) expand it to ")
    assert "more than 100,000 beyond the" in line


def test_the_bound_is_on_what_aliases_add():
    block = "[" + ", ".join(["1"] * 999) + "]"  # 1000 values: the list and its items
    per_alias = 1000

    def document(aliases: int) -> str:
        return f"a: &a {block}\nb: [{', '.join(['*a'] * aliases)}]\n"

    below = MAX_EXPANDED_VALUES // per_alias
    assert len(parse_yaml(document(below), "f.yaml")["b"]) == below
    assert "expand it to" in refused(document(below + 1))


def test_values_written_out_are_not_what_is_bounded(monkeypatch):
    monkeypatch.setattr(loading, "MAX_EXPANDED_VALUES", 10)
    written = "[" + ", ".join(["1"] * 100) + "]"
    assert len(parse_yaml(written, "f.yaml")) == 100
    assert "expand it to" in refused(f"a: &a {written}\nb: *a\n")


def test_ordinary_aliases_and_merge_keys_still_work():
    text = "base: &b {lr: 0.1, hidden: [64, 32]}\nrun: {<<: *b, lr: 0.2}\nagain: *b\n"
    loaded = parse_yaml(text, "f.yaml")
    assert loaded["run"] == {"lr": 0.2, "hidden": [64, 32]}
    assert loaded["again"] == {"lr": 0.1, "hidden": [64, 32]}


def test_an_alias_inside_its_own_anchor():
    assert "an alias refers to the value that holds it" in refused("a: &a [1, *a]\n")
    assert "an alias refers to the value that holds it" in refused("a: &a {me: *a}\n")


def test_nesting_is_bounded_with_where_it_went_too_deep():
    flow = "x: " + "[" * 50_000 + "]" * 50_000 + "\n"
    assert refused(flow) == (
        f"f.yaml: line 1, column {4 + MAX_DEPTH}: invalid YAML: nested more than "
        f"{MAX_DEPTH} levels deep"
    )
    block = "".join(" " * i + f"k{i}:\n" for i in range(MAX_DEPTH + 5)) + " " * 200 + "v\n"
    assert "nested more than 100 levels deep" in refused(block)
    just = "x: " + "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1) + "\n"
    assert parse_yaml(just, "f.yaml")["x"] is not None
