"""Docs are tests: the ```python blocks of the repository's README run as written, in order and in one
namespace (later blocks continue the first one's session, as a reader would), in a scratch folder since
the snippets write files, so the front page cannot drift from the API."""

from __future__ import annotations

import re
from pathlib import Path


README = Path(__file__).resolve().parents[2] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def test_readme_has_python_examples():
    assert python_blocks(), f"no ```python block in {README}"


def test_readme_python_blocks_run_in_order(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__readme__"}
    for index, code in enumerate(python_blocks()):
        exec(compile(code, f"README.md python block {index + 1}", "exec"), namespace)
