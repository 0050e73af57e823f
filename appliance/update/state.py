"""What the updater remembers across the reboot, and what it tells the ops history.

``<data_dir>/update/state.json`` exists while an installed slot waits for its trial boot:
the slot, its version, and where it came from. The data partition is shared by both slots,
so the next boot (old or new slot) finds it and knows whether the trial happened. Every
outcome is also an event in ``ops.db`` beside the anomalies and restarts (kinds
``update_installed``, ``update_refused``, ``update_confirmed``, ``update_unhealthy``,
``update_rolled_back``).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from appliance.config import Settings
from appliance.files import remove_durable, write_atomic

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Pending:
    slot: str
    version: str
    from_slot: str
    from_version: str
    installed_at: float = field(default_factory=time.time)


def state_file(settings: Settings) -> Path:
    return settings.paths.data_dir / "update" / "state.json"


def read_pending(path: Path) -> Pending | None:
    try:
        value = json.loads(path.read_text())
        return Pending(**value["pending"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("ignoring unreadable update state %s: %s", path, exc)
        return None


def write_pending(path: Path, pending: Pending) -> None:
    write_atomic(path, json.dumps({"pending": asdict(pending)}, indent=2).encode() + b"\n")


def clear_pending(path: Path) -> None:
    if path.exists():
        remove_durable([path])


def record_event(settings: Settings, kind: str, severity: str, reason: str,
                 action: str = "") -> None:
    """An event in ops.db (and the log); a history that cannot be written loses the event,
    never the update."""
    from ops.history import Event, History, connect

    getattr(log, "warning" if severity != "info" else "info")("%s: %s", kind, reason)
    try:
        history = History(connect(settings.paths.ops_database), settings.ops.history_hours * 3600)
        try:
            history.add_event(Event(kind=kind, source="update", severity=severity,
                                    reason=reason, action=action))
        finally:
            history.db.close()
    except (OSError, sqlite3.Error) as exc:
        log.warning("could not record %s in %s: %s", kind, settings.paths.ops_database, exc)

