"""The code on the documentation's pages runs as written: every ```python block of
docs/extending.md and of the README, each page's blocks in order in one namespace (a page's
later blocks use its earlier ones)."""

from __future__ import annotations

import os
import re
import sys
import types

import pytest

from vae_jax import losses, models

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = ("docs/extending.md", "README.md")


def python_blocks(text: str) -> list[str]:
    """The bodies of the ```python fenced blocks of a Markdown page, in order."""
    return re.findall(r"^```python\n(.*?)^```$", text, re.M | re.S)


def test_the_block_finder_reads_only_python_blocks():
    page = "a\n```python\nx = 1\n```\n```bash\nls\n```\n```python\ny = x\n```\n"
    assert python_blocks(page) == ["x = 1\n", "y = x\n"]


@pytest.mark.slow   # a few trained steps and compilations per page (CI runs it)
@pytest.mark.parametrize("page", PAGES)
def test_every_python_block_runs(page):
    blocks = python_blocks(open(os.path.join(ROOT, page)).read())
    assert blocks, f"{page} has no python block"
    model_names, loss_names = set(models.names()), set(losses.names())
    module = types.ModuleType("docs_" + os.path.basename(page).replace(".", "_"))
    sys.modules[module.__name__] = module  # dataclasses (Flax modules) look their module up
    namespace = module.__dict__
    try:
        for i, block in enumerate(blocks):
            try:
                exec(compile(block, f"{page}[block {i}]", "exec"), namespace)
            except Exception as e:
                raise AssertionError(f"{page}, python block {i} failed: {e!r}\n{block}") from e
    finally:  # what a page registered is removed again
        del sys.modules[module.__name__]
        for name in set(models.names()) - model_names:
            models.unregister(name)
        for name in set(losses.names()) - loss_names:
            losses.unregister(name)
