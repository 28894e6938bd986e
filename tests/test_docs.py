"""The docs cannot drift: the site builds with ``mkdocs build --strict``, and every shell
and Python example in the README and ``docs/`` runs (or is marked
``<!-- illustrative: reason -->`` on the line before it, with the reason).

Each page's examples run in order in a folder of their own, laid out like a clone of
the repository (``configs/``, ``examples/``, ``scripts/``, the bundled digits), with the
quickstart's run ``runs/digits-mlp`` trained once for all pages and the input files the
examples name (``new-digits.npz``, ``flat.npz`` ...) made from the digits. A ``bash``
block runs line by line in a shell; a ``python`` block in a fresh interpreter; a block
of ``$ command`` lines runs each command, and must fail with the error the block shows
when the line after it starts with ``error:``; a ``yaml`` block that starts with a
``# name.yaml`` comment is written as that file (and every YAML block must parse).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from keepbest import errors

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(
    r"^(<!-- illustrative: (?P<why>.+?) -->\n)?```(?P<lang>\w*)\n(?P<body>.*?)^```", re.S | re.M
)
RUNNABLE = ("bash", "python")


def blocks(page: Path):
    text = page.read_text(encoding="utf-8")
    for match in FENCE.finditer(text):
        line = text[: match.start()].count("\n") + 1
        yield line, match.group("lang"), match.group("body"), match.group("why")


def test_the_site_builds_strictly(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    reference = (tmp_path / "site" / "config-reference" / "index.html").read_text()
    for key in ("checkpoint.monitor", "data.x", "resume.max_overhead", "distribute.strategy"):
        assert key in reference


def test_every_exit_code_is_in_the_table():
    table = (REPO / "docs" / "exit-codes.md").read_text()
    codes = {v for k, v in vars(errors).items() if k.startswith("EXIT_")}
    for code in codes:
        assert f"\n| {code} |" in table, code


def test_every_example_runs_or_says_why_not():
    for page in PAGES:
        for line, lang, body, why in blocks(page):
            commands = [cmd for cmd in body.splitlines() if cmd.startswith("$ ")]
            if lang in RUNNABLE or (not lang and commands):
                assert why is None or len(why) > 20, f"{page.name}:{line}: say why"
            if lang == "yaml":
                yaml.safe_load(body)  # every YAML example parses


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A clone-like folder with the quickstart trained (runs/digits-mlp)."""
    root = tmp_path_factory.mktemp("docs-clone")
    for folder in ("configs", "examples", "scripts"):
        shutil.copytree(REPO / folder, root / folder)
    data = root / "src" / "keepbest" / "datasets"
    data.mkdir(parents=True)
    shutil.copy(REPO / "src" / "keepbest" / "datasets" / "digits.npz", data / "digits.npz")
    done = subprocess.run(
        ["train", "--config", "configs/quickstart.yaml"], cwd=root, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    with np.load(data / "digits.npz") as npz:
        x = npz["x"][:360]
    np.savez(root / "new-digits.npz", x=x)
    np.savez(root / "flat.npz", x=x.reshape(len(x), -1))
    np.savez(root / "scaled.npz", x=(x.astype("float32") / 16)[..., None])
    np.savez(root / "bytes.npz", x=x.astype("float32") * 16)
    return root


def _run(command: list[str] | str, folder: Path, shell: bool = False):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run(
        command, cwd=folder, shell=shell, capture_output=True, text=True, env=env, timeout=600
    )


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_the_examples_of_a_page_run(page, trained, tmp_path):
    runnable = [
        (line, lang, body)
        for line, lang, body, why in blocks(page)
        if why is None
        and (lang in RUNNABLE or lang == "yaml" or (not lang and "\n$ " in "\n" + body))
    ]
    if not any(lang != "yaml" for _, lang, _ in runnable):
        pytest.skip("no runnable example")
    folder = tmp_path / "clone"
    shutil.copytree(trained, folder, symlinks=True)
    if page.name == "training.md":  # its example trains the quickstart itself
        shutil.rmtree(folder / "runs")
    for line, lang, body in runnable:
        where = f"{page.name}:{line}"
        if lang == "yaml":
            name = re.match(r"# ([\w.-]+\.ya?ml)", body)
            if name:
                (folder / name.group(1)).write_text(body)
            continue
        if lang == "python":
            done = _run([sys.executable, "-c", body], folder)
            assert done.returncode == 0, f"{where}: {done.stderr[-2000:]}"
        elif lang == "bash":
            for command in body.splitlines():
                command = command.split("  #")[0].strip()
                if command and not command.startswith("#"):
                    done = _run(command, folder, shell=True)
                    assert done.returncode == 0, f"{where}: {command}: {done.stderr[-2000:]}"
        else:
            shown = body.splitlines()
            for i, text in enumerate(shown):
                if not text.startswith("$ "):
                    continue
                command = text[2:].split("  #")[0].strip()
                after = shown[i + 1] if i + 1 < len(shown) else ""
                done = _run(command, folder, shell=True)
                assert "Traceback" not in done.stderr, f"{where}: {command}: {done.stderr}"
                if after.startswith("error:"):
                    assert done.returncode == errors.EXIT_BAD_INPUT, f"{where}: {command}"
                    assert after[:50] in done.stderr, f"{where}: {done.stderr}"
                else:
                    assert done.returncode == 0, f"{where}: {command}: {done.stderr[-2000:]}"
