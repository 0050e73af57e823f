"""The release's software bill of materials, CycloneDX JSON: every Debian package and Python
wheel inside the image, with its version, package URL and SHA-256, so an operator (or a
vulnerability scanner) can see what a box runs without booting it.

Reproducible like the rest of the outputs: the serial number is derived from the version and
commit, the timestamp is SOURCE_DATE_EPOCH, components are sorted.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

from cyclonedx.model import HashAlgorithm, HashType
from cyclonedx.model.bom import Bom, BomMetaData
from cyclonedx.model.component import Component, ComponentType
from cyclonedx.output.json import JsonV1Dot6
from packageurl import PackageURL

from image.spec import BuildInputs

DISTRO = "debian-12"


def _sha256(value: str) -> list[HashType]:
    return [HashType(alg=HashAlgorithm.SHA_256, content=value)]


def deb_component(entry: dict[str, str]) -> Component:
    purl = PackageURL(type="deb", namespace="debian", name=entry["name"],
                      version=entry["version"],
                      qualifiers={"arch": entry["arch"], "distro": DISTRO})
    return Component(name=entry["name"], version=entry["version"], type=ComponentType.LIBRARY,
                     purl=purl, bom_ref=purl.to_string(), hashes=_sha256(entry["sha256"]))


def wheel_component(entry: dict[str, str]) -> Component:
    purl = PackageURL(type="pypi", name=entry["name"].replace("_", "-").lower(),
                      version=entry["version"])
    return Component(name=entry["name"], version=entry["version"], type=ComponentType.LIBRARY,
                     purl=purl, bom_ref=purl.to_string(), hashes=_sha256(entry["sha256"]))


def sbom(inputs: BuildInputs, packages: dict[str, list[dict[str, str]]]) -> Bom:
    image = Component(name="edge-appliance-image", version=inputs.version,
                      type=ComponentType.OPERATING_SYSTEM, bom_ref="edge-appliance-image")
    bom = Bom(serial_number=uuid.uuid5(uuid.NAMESPACE_URL,
                                       f"edge-appliance-image/{inputs.version}/{inputs.commit}"),
              metadata=BomMetaData(component=image,
                                   timestamp=datetime.fromtimestamp(inputs.epoch, tz=UTC)))
    for entry in packages["debian"]:
        bom.components.add(deb_component(entry))
    for entry in packages["python"]:
        bom.components.add(wheel_component(entry))
    bom.register_dependency(image, list(bom.components))
    return bom


def write_sbom(path: Path, inputs: BuildInputs,
               packages: dict[str, list[dict[str, str]]]) -> Path:
    path.write_text(JsonV1Dot6(sbom(inputs, packages)).output_as_string(indent=2) + "\n")
    return path
