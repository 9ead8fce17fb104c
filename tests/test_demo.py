"""The ``aiocircuit demo`` command: it shows real breaker behaviour, and its CLI is sound.

These tests run the demo in real time with small parameters (a few seconds each): the
demo exists to show the real breaker under real concurrency, so it is not faked here.
"""

from __future__ import annotations

import itertools
import re
import subprocess
import sys

import pytest

from aiocircuit import CircuitState
from aiocircuit.__main__ import main
from aiocircuit._demo import DemoSummary, Scenario, run_simulation

CLOSED, OPEN, HALF_OPEN = CircuitState.CLOSED, CircuitState.OPEN, CircuitState.HALF_OPEN
ALLOWED = {(CLOSED, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, OPEN), (HALF_OPEN, CLOSED)}

# Outage from 0.3 s to 1.2 s of a 3 s load: the circuit trips, probes at most every
# recovery_timeout (1 s), and has well over a second after the outage to close again.
SMALL = Scenario(tasks=50, duration=3.0, outage_start=0.3, outage_end=1.2)

TRANSITION_LINE = re.compile(
    r"^\s+\d+\.\d{3} s  (CLOSED|OPEN|HALF_OPEN)\s+-> (CLOSED|OPEN|HALF_OPEN)"
)
SUMMARY_ROW = re.compile(r"^  (calls|admitted|rejected|failed|probes)\s+([\d,]+)", re.MULTILINE)


def assert_valid_cycle(pairs: list[tuple[CircuitState, CircuitState]]) -> None:
    """Transitions chain (each starts where the last ended), use only the machine's edges,
    and run from CLOSED back to CLOSED."""
    assert pairs, "the circuit never changed state"
    assert pairs[0] == (CLOSED, OPEN)
    assert pairs[-1] == (HALF_OPEN, CLOSED)
    for (_, previous_to), (current_from, _) in itertools.pairwise(pairs):
        assert current_from == previous_to
    assert set(pairs) <= ALLOWED


def summary_numbers(output: str) -> dict[str, int]:
    """The numeric rows of a printed summary."""
    return {label: int(value.replace(",", "")) for label, value in SUMMARY_ROW.findall(output)}


@pytest.mark.anyio
async def test_simulation_trips_rejects_probes_once_and_recovers() -> None:
    """Under load the circuit trips, rejects fast, probes one at a time and ends closed."""
    lines: list[str] = []
    summary = await run_simulation(SMALL, lines.append)

    assert isinstance(summary, DemoSummary)
    assert summary.trips >= 1
    assert summary.final_state is CLOSED
    assert summary.rejected > 0
    assert summary.admitted + summary.rejected == summary.calls
    assert summary.succeeded + summary.failed == summary.admitted
    assert summary.failed > 0
    assert_valid_cycle([(t.from_state, t.to_state) for t in summary.transitions])
    # success_threshold is 1: each recovery attempt is exactly one probe call, never two
    # at once.
    assert summary.recovery_attempts >= 1
    assert summary.probes == summary.recovery_attempts
    assert summary.max_probes_in_flight == 1
    assert [t.at for t in summary.transitions] == sorted(t.at for t in summary.transitions)
    recovery = summary.time_to_recover
    assert recovery is not None
    assert recovery > 0
    # Each transition is reported once, as it happens, in the order it happened.
    printed = [match.groups() for line in lines if (match := TRANSITION_LINE.match(line))]
    assert printed == [(t.from_state.value, t.to_state.value) for t in summary.transitions]


def test_main_demo_prints_transitions_and_consistent_summary(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``main(["demo", ...])`` prints a valid transition cycle and a summary that adds up."""
    assert main(["demo", "--tasks", "50", "--seconds", "3", "--backend", "trio"]) == 0
    out = capsys.readouterr().out

    assert "(trio, in-memory store)" in out
    printed = [
        match.groups() for line in out.splitlines() if (match := TRANSITION_LINE.match(line))
    ]
    assert_valid_cycle([(CircuitState(a), CircuitState(b)) for a, b in printed])
    numbers = summary_numbers(out)
    assert numbers["admitted"] + numbers["rejected"] == numbers["calls"]
    assert numbers["rejected"] > 0
    assert numbers["probes"] == printed.count(("OPEN", "HALF_OPEN"))
    assert re.search(r"^  time to recover\s+\d+\.\d{3} s", out, re.MULTILINE)
    assert re.search(r"^  final state\s+CLOSED$", out, re.MULTILINE)


def test_module_runs_demo_with_defaults() -> None:
    """``python -m aiocircuit demo`` with default parameters exits 0 and prints the summary."""
    # The timeout only keeps a hung run from hanging the suite; it asserts nothing.
    result = subprocess.run(
        [sys.executable, "-m", "aiocircuit", "demo"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    out = result.stdout
    assert "300 tasks" in out
    assert "(asyncio, in-memory store)" in out
    numbers = summary_numbers(out)
    assert set(numbers) == {"calls", "admitted", "rejected", "failed", "probes"}
    assert numbers["admitted"] + numbers["rejected"] == numbers["calls"]
    assert re.search(r"^  time to recover\s+\d+\.\d{3} s", out, re.MULTILINE)
    assert re.search(r"^  final state\s+CLOSED$", out, re.MULTILINE)


@pytest.mark.parametrize(
    "argv",
    [
        ["frobnicate"],
        ["demo", "--bogus"],
        ["demo", "--tasks", "0"],
        ["demo", "--tasks", "many"],
        ["demo", "--seconds", "1"],
        ["demo", "--backend", "curio"],
    ],
)
def test_bad_arguments_exit_non_zero_with_one_line(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """Bad input returns exit code 2 and explains itself in exactly one line on stderr."""
    assert main(argv) == 2
    captured = capsys.readouterr()

    assert captured.out == ""
    assert captured.err.startswith("aiocircuit: error: ")
    assert captured.err.count("\n") == 1


def test_bad_argument_process_exit_code() -> None:
    """Run as a program, a bad argument makes the process exit non-zero with one line."""
    result = subprocess.run(
        [sys.executable, "-m", "aiocircuit", "demo", "--tasks", "-3"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert "--tasks" in result.stderr


@pytest.mark.parametrize("argv", [[], ["--help"], ["demo", "--help"]])
def test_no_command_or_help_prints_usage(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """No command, or ``--help``, prints usage and exits 0 without running anything."""
    assert main(argv) == 0
    out = capsys.readouterr().out

    assert out.startswith("usage: aiocircuit")
    assert "demo" in out


def test_scenario_rejects_an_outage_outside_the_load() -> None:
    """A scenario whose outage does not fit inside the load is refused, naming the fields."""
    with pytest.raises(ValueError, match="outage_end"):
        Scenario(duration=2.0, outage_start=1.0, outage_end=3.0)
