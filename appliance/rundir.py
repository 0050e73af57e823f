"""The run folder (``<data_dir>/run``): the files the box's processes leave for each other.
This is the one place that names them; their formats are typed where they are written
(:mod:`ops.pressure`, :mod:`selfheal.state_file`). ``appliance service``'s own pidfile and
lock are :class:`selfheal.daemon.Service`'s, which owns them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunDir:
    path: Path

    def ensure(self) -> RunDir:
        self.path.mkdir(parents=True, exist_ok=True)
        return self

    def pidfile(self, process: str) -> Path:
        """``engine``, ``gateway`` or ``ops``: the pid each writes when it starts, for the
        ops collector's per-process figures."""
        return self.path / f"{process}.pid"

    @property
    def pressure(self) -> Path:
        """Memory-pressure level: written by the ops daemon, obeyed by the engine."""
        return self.path / "pressure.json"

    @property
    def ops_heartbeat(self) -> Path:
        """Touched by the ops daemon each round; its age is the ops liveness probe."""
        return self.path / "ops.heartbeat"

    @property
    def supervisor_state(self) -> Path:
        """Each supervised service's state (:mod:`selfheal.state_file`)."""
        return self.path / "supervisor.json"

    @property
    def restart_requests(self) -> Path:
        """A file named for a service asks its supervisor for a graceful restart; the file's
        text is the reason."""
        return self.path / "restart"

    @property
    def operator_token(self) -> Path:
        """The short-lived operator token ``appliance up`` prints and the CLI reuses."""
        return self.path / "operator.token"

    @property
    def engine_lock(self) -> Path:
        """Held by the running engine: a second one on the same box refuses to start."""
        return self.path / "engine.lock"

    @property
    def engine_socket(self) -> Path:
        return self.path / "engine.sock"
