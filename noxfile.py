"""Development sessions: `nox -s tests lint typecheck` (and `bench`, `demo`)."""

from __future__ import annotations

import shutil

import nox

nox.options.sessions = ["lint", "typecheck", "tests"]
nox.options.reuse_existing_virtualenvs = True

ALL_PYTHONS = ["3.10", "3.11", "3.12", "3.13"]
# Test on every supported Python this machine has; skip none silently that it has.
PYTHONS = [v for v in ALL_PYTHONS if shutil.which(f"python{v}")] or ["3"]


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """The test suite, on asyncio and trio."""
    session.install("-e", ".[test]")
    session.run("pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check."""
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the package and the public-API typing file."""
    session.install("-e", ".[test]", "mypy")
    session.run("mypy", "--strict")


@nox.session
def bench(session: nox.Session) -> None:
    """The closed-path overhead benchmark (ratios against hand-written floors)."""
    session.install("-e", ".")
    session.run("python", "-m", "benchmarks", *session.posargs)


@nox.session
def demo(session: nox.Session) -> None:
    """`python -m aiocircuit demo` on the in-memory store."""
    session.install("-e", ".")
    session.run("python", "-m", "aiocircuit", "demo")
