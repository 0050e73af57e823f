"""What a release says it contains: every Debian package and Python wheel of the built image,
with hashes that match the files the build used, as a CycloneDX SBOM a scanner accepts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator

from image.debcache import DebCache, file_sha256
from image.lock import read_lock
from image.spec import BuildInputs

pytestmark = pytest.mark.image


@pytest.fixture(scope="module")
def manifest(image_out: Path) -> dict:
    return json.loads((image_out / "manifest.json").read_text())


def test_the_manifest_lists_every_locked_package_with_the_sha256_of_its_deb(
        manifest: dict) -> None:
    cache = DebCache(BuildInputs.from_env().deb_cache)
    debs = {f"{p['name']}={p['version']}": p for p in manifest["packages"]["debian"]}
    assert sorted(debs) == sorted(read_lock())
    for entry in debs.values():
        blob = cache.blobs / f"{entry['sha256']}.deb"
        assert file_sha256(blob) == entry["sha256"]


def test_the_manifest_lists_every_wheel_of_the_box(manifest: dict, image_out: Path) -> None:
    wheels = {p["file"]: p["sha256"] for p in manifest["packages"]["python"]}
    built = sorted((image_out / "work/wheelhouse").glob("*.whl"))
    assert sorted(wheels) == [w.name for w in built]
    assert all(file_sha256(w) == wheels[w.name] for w in built)


def test_the_sbom_is_valid_cyclonedx_and_names_every_package(manifest: dict,
                                                              image_out: Path) -> None:
    text = (image_out / "sbom.cdx.json").read_text()
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(text) is None
    components = json.loads(text)["components"]
    purls = {c["purl"] for c in components}
    assert len(components) == (len(manifest["packages"]["debian"])
                               + len(manifest["packages"]["python"]))
    assert any(p.startswith("pkg:deb/debian/linux-image-amd64@") for p in purls)
    assert any(p.startswith("pkg:pypi/openvino@") for p in purls)
    assert manifest["files"]["sbom.cdx.json"]["sha256"] == file_sha256(image_out / "sbom.cdx.json")
