"""supervisor.json, the supervisor's record for the collector and the metrics: one typed
model on both sides (selfheal/state_file.py)."""

from __future__ import annotations

from pathlib import Path

from selfheal.state_file import ServiceState, read_states, write_states
from selfheal.states import ProcessState


def test_what_the_supervisor_writes_is_what_the_readers_get(tmp_path: Path) -> None:
    states = {"engine": ServiceState(state=ProcessState.RUNNING, pid=42, restarts=2),
              "ops": ServiceState(state=ProcessState.FAILED, reason="crash loop",
                                  escalated=True)}
    path = tmp_path / "supervisor.json"
    write_states(path, states)
    assert read_states(path) == states
    assert [p.name for p in tmp_path.iterdir()] == ["supervisor.json"]  # no scratch left


def test_no_file_yet_reads_as_no_services(tmp_path: Path) -> None:
    assert read_states(tmp_path / "supervisor.json") == {}


def test_a_file_the_supervisor_did_not_write_reads_as_no_services(tmp_path: Path) -> None:
    path = tmp_path / "supervisor.json"
    path.write_text('{"engine": {"state": "dancing"}}')
    assert read_states(path) == {}
