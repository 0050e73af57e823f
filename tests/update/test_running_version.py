"""The version a box reports (``/readyz``, benchmarks): the image's release file when there
is one, since a slot is one release whatever its packages say; else the installed package's."""

from __future__ import annotations

from pathlib import Path

from appliance import __version__
from appliance.update.release import release_json
from appliance.version import running_version


def test_a_box_booted_from_an_image_reports_its_release_file(tmp_path: Path) -> None:
    release = tmp_path / "release.json"
    release.write_bytes(release_json("7.3.1", "edge-appliance-x86_64"))
    assert running_version(release) == "7.3.1"


def test_a_plain_host_reports_the_installed_package(tmp_path: Path) -> None:
    assert running_version(tmp_path / "missing.json") == __version__
