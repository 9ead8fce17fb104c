"""Development sessions: `nox -s lint typecheck tests tests-core docs` (and `bench`,
`bench-quick`, `demo`)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import nox

# nox.project.dependency_groups (PEP 735 groups, read from pyproject.toml) is 2025.02.09's.
nox.needs_version = ">=2025.2.9"

nox.options.sessions = ["lint", "typecheck", "tests", "tests-core", "docs"]
nox.options.reuse_existing_virtualenvs = True
nox.options.download_python = "never"
# `tests` runs on every supported Python this machine has, and skips the others.
nox.options.error_on_missing_interpreters = False

PYTHONS = ["3.10", "3.11", "3.12", "3.13"]

PYPROJECT = nox.project.load_toml(Path(__file__).with_name("pyproject.toml"))
# The package with every optional extra, as the whole suite, mypy and the benchmarks need it.
WITH_EXTRAS = ".[dynamodb,httpx,aiohttp]"
# What `tests-core` must not find installed: the extras' packages and the tools only the
# whole suite installs.
NOT_IN_CORE = (
    "aioboto3",
    "aiobotocore",
    "botocore",
    "boto3",
    "httpx",
    "aiohttp",
    "moto",
    "aws_lambda_powertools",
    "starlette",
)


def group(name: str) -> tuple[str, ...]:
    """The requirements of one [dependency-groups] group of pyproject.toml."""
    return nox.project.dependency_groups(PYPROJECT, name)


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
    """The whole test suite, on asyncio and trio, under coverage: each Python's run must
    reach [tool.coverage.report] fail_under on its own (not checked when posargs pick
    tests: `nox -s tests-3.11 -- tests/test_breaker.py`)."""
    session.install("-e", WITH_EXTRAS, *group("test"))
    # One data file per session, so that runs on several Pythons never mix.
    env = {"COVERAGE_FILE": str(Path(session.create_tmp()) / ".coverage")}
    session.run("coverage", "run", "-m", "pytest", *session.posargs, env=env)
    session.run("coverage", "report", *(["--fail-under=0"] if session.posargs else []), env=env)


@nox.session(name="tests-core")
def tests_core(session: nox.Session) -> None:
    """The tests that need no optional extra, with none installed (`pytest --no-extras`,
    see tests/conftest.py): the package, the in-memory store and the sync shim work
    without aioboto3, httpx or aiohttp."""
    session.install("-e", ".", *group("test-core"))
    # First, that none of them is here (a dependency could bring one in).
    check = (
        "import importlib.util, sys;"
        " found = [m for m in sys.argv[1:] if importlib.util.find_spec(m)];"
        " sys.exit(f'installed, but tests-core runs without them: {found}' if found else None)"
    )
    session.run("python", "-c", check, *NOT_IN_CORE, silent=True)
    session.run("pytest", "--no-extras", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check."""
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the package and the tests (the public-API typing file among them)."""
    session.install("-e", WITH_EXTRAS, *group("test"), "mypy")
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


@nox.session
def bench(session: nox.Session) -> None:
    """Every benchmark scenario, aiocircuit beside every peer: tables, JSON and charts
    under benchmarks/results/ (`nox -s bench -- --quick` for the short mode)."""
    session.install("-e", WITH_EXTRAS, *group("bench"))
    session.run("python", "-m", "benchmarks", *session.posargs)


@nox.session(name="bench-quick")
def bench_quick(session: nox.Session) -> None:
    """The benchmarks' quick mode, as CI's smoke test: every scenario still runs end to end."""
    session.install("-e", WITH_EXTRAS, *group("bench"))
    session.run("python", "-m", "benchmarks", "--quick", *session.posargs)


@nox.session
def demo(session: nox.Session) -> None:
    """`python -m aiocircuit demo` on the in-memory store."""
    session.install("-e", ".")
    session.run("python", "-m", "aiocircuit", "demo")
