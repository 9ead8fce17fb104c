"""The code examples in docs/ run as written."""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Any

import pytest

DOCS = Path(__file__).parent.parent / "docs"
BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)


def _examples() -> list[Any]:
    return [
        pytest.param(block, id=f"{page.name}:{number}")
        for page in sorted(DOCS.glob("*.md"))
        for number, block in enumerate(BLOCK.findall(page.read_text()), start=1)
    ]


@pytest.mark.anyio
@pytest.mark.parametrize("source", _examples())
async def test_example_runs(source: str) -> None:
    """Each example executes, and every `test_*` coroutine it defines passes."""
    namespace: dict[str, Any] = {"__name__": "docs_example"}
    exec(compile(source, "<docs example>", "exec"), namespace)
    for name, value in namespace.items():
        if name.startswith("test_") and inspect.iscoroutinefunction(value):
            await value()
