"""``supervisor.json``: each supervised service's state, written by the supervisor, read by
the ops collector and the gateway's metrics. One typed model, so a reader cannot drift from
the writer (the states are :class:`ProcessState`'s)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, TypeAdapter, ValidationError

from selfheal.states import ProcessState


class ServiceState(BaseModel):
    state: ProcessState
    pid: int | None = None
    restarts: int = 0
    hangs: int = 0
    requested_restarts: int = 0
    last_exit: int | None = None
    reason: str = ""
    escalated: bool = False


_STATES = TypeAdapter(dict[str, ServiceState])


def write_states(path: Path, states: Mapping[str, ServiceState]) -> None:
    """Replaced whole (readers see the old file or the new); not fsynced: it is rewritten on
    every change and describes only the running supervisor."""
    data = json.dumps({name: state.model_dump(mode="json") for name, state in states.items()},
                      indent=1)
    scratch = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    scratch.write_text(data)
    scratch.replace(path)


def read_states(path: Path) -> dict[str, ServiceState]:
    """The last written states; empty when there is no supervisor (yet) or the file is not
    one it wrote."""
    try:
        return _STATES.validate_json(path.read_bytes())
    except (OSError, ValidationError):
        return {}
