"""Rotation of the appliance's own log files, with a writer that keeps its file open."""

from __future__ import annotations

import gzip
from pathlib import Path

from ops.logrotate import rotate, rotate_all


def test_a_log_past_its_size_is_rotated_and_the_open_writer_goes_on(tmp_path: Path) -> None:
    log = tmp_path / "appliance.log"
    with log.open("ab", buffering=0) as writer:  # as `appliance service start` holds it
        writer.write(b"a" * 2000)
        assert rotate(log, max_bytes=1000, keep=3)
        writer.write(b"after\n")
    assert log.read_bytes() == b"after\n"
    assert gzip.decompress((tmp_path / "appliance.log.1.gz").read_bytes()) == b"a" * 2000


def test_a_small_log_is_left_alone(tmp_path: Path) -> None:
    log = tmp_path / "appliance.log"
    log.write_text("short\n")
    assert not rotate(log, max_bytes=1000, keep=3)
    assert log.read_text() == "short\n"


def test_only_the_newest_generations_are_kept(tmp_path: Path) -> None:
    log = tmp_path / "appliance.log"
    for n in range(5):
        log.write_text(f"{n}" * 100)
        assert rotate_all(tmp_path, max_bytes=10, keep=2) == [log]
    kept = sorted(p.name for p in tmp_path.glob("appliance.log.*"))
    assert kept == ["appliance.log.1.gz", "appliance.log.2.gz"]
    assert gzip.decompress((tmp_path / "appliance.log.1.gz").read_bytes()) == b"4" * 100
    assert gzip.decompress((tmp_path / "appliance.log.2.gz").read_bytes()) == b"3" * 100
