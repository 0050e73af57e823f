"""Signed model packages: a whole model and a delta install; every refusal changes nothing."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from appliance.models import package
from appliance.models.package import PackageRefused, build, install
from appliance.update import signing

MODEL = "smollm2-135m-instruct"


def snapshot(models_dir: Path) -> dict[str, str]:
    return {p.relative_to(models_dir).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(models_dir.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A trusted keyring (one key) and the private key that signs for it."""
    folder = tmp_path_factory.mktemp("keys")
    private, _ = signing.generate_keypair(folder)
    return private, folder


@pytest.fixture(scope="module")
def models(model_store: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The default model's IR, and a "fine-tuned" copy whose weights differ in one region."""
    root = tmp_path_factory.mktemp("built")
    original = root / MODEL
    shutil.copytree(model_store / "models" / MODEL, original)
    tuned = root / "tuned" / MODEL
    shutil.copytree(original, tuned)
    weights = bytearray((tuned / "openvino_model.bin").read_bytes())
    start = len(weights) // 2
    weights[start:start + (1 << 20)] = os.urandom(1 << 20)  # a layer retrained: 1 MiB new
    (tuned / "openvino_model.bin").write_bytes(bytes(weights))
    return {"original": original, "tuned": tuned}


@pytest.fixture
def box(models: dict[str, Path], tmp_path: Path) -> Path:
    """A box's models directory holding the original model."""
    models_dir = tmp_path / "models"
    shutil.copytree(models["original"], models_dir / MODEL)
    return models_dir


def key_of(keys: tuple[Path, Path]) -> signing.Ed25519PrivateKey:
    return signing.load_private_key(keys[0])


def test_a_full_package_installs_and_the_engine_loads_it(
        keys: tuple[Path, Path], models: dict[str, Path], tmp_path: Path) -> None:
    made = build(models["tuned"], MODEL, key_of(keys), tmp_path / "full.pkg", "0.1")
    assert made.payload == package.FULL and made.base_id is None
    empty = tmp_path / "empty"
    install(tmp_path / "full.pkg", empty, keys[1], "1.0")
    assert snapshot(empty) == snapshot(models["tuned"].parent)


def test_a_delta_is_a_fraction_of_the_model_and_rebuilds_it_exactly(
        keys: tuple[Path, Path], models: dict[str, Path], box: Path, tmp_path: Path) -> None:
    full = build(models["tuned"], MODEL, key_of(keys), tmp_path / "full.pkg", "0.1")
    delta = build(models["tuned"], MODEL, key_of(keys), tmp_path / "delta.pkg", "0.1",
                  base=models["original"])
    assert delta.payload == package.DELTA and delta.base_id == MODEL
    assert delta.payload_size < full.payload_size / 10
    install(tmp_path / "delta.pkg", box, keys[1], "1.0", smoke_test=False)
    assert snapshot(box) == snapshot(models["tuned"].parent)


def refused(package_path: Path, box: Path, keyring: Path, says: str,
            version: str = "1.0") -> None:
    before = snapshot(box)
    with pytest.raises(PackageRefused, match=says):
        install(package_path, box, keyring, version, smoke_test=False)
    assert snapshot(box) == before
    assert [p.name for p in box.iterdir()] == [MODEL]  # no scratch folder left behind


def rewrite(source: Path, target: Path, change: dict[str, bytes]) -> None:
    """The package with some members' bytes replaced."""
    with tarfile.open(source) as old, tarfile.open(target, "w") as new:
        for info in old.getmembers():
            data = change.get(info.name, old.extractfile(info).read())  # type: ignore[union-attr]
            info.size = len(data)
            new.addfile(info, io.BytesIO(data))


@pytest.fixture
def delta_package(keys: tuple[Path, Path], models: dict[str, Path], tmp_path: Path) -> Path:
    path = tmp_path / "delta.pkg"
    build(models["tuned"], MODEL, key_of(keys), path, "0.1", base=models["original"])
    return path


def test_an_altered_manifest_is_refused(delta_package: Path, box: Path, keys: tuple[Path, Path],
                                        tmp_path: Path) -> None:
    with tarfile.open(delta_package) as tar:
        head = tar.extractfile(package.MANIFEST).read()  # type: ignore[union-attr]
    rewrite(delta_package, tmp_path / "bad.pkg",
            {package.MANIFEST: head.replace(b'"min_version":"0.1"', b'"min_version":"0.0"')})
    refused(tmp_path / "bad.pkg", box, keys[1], "bad signature")


def test_a_package_signed_by_a_foreign_key_is_refused(models: dict[str, Path], box: Path,
                                                      keys: tuple[Path, Path],
                                                      tmp_path: Path) -> None:
    foreign, _ = signing.generate_keypair(tmp_path, "foreign")
    build(models["tuned"], MODEL, signing.load_private_key(foreign), tmp_path / "f.pkg", "0.1")
    refused(tmp_path / "f.pkg", box, keys[1], "not in this box's keyring")


def test_a_delta_against_another_build_of_the_base_is_refused(
        delta_package: Path, box: Path, keys: tuple[Path, Path]) -> None:
    (box / MODEL / "config.json").write_text("{}")  # this box's base is not the one
    refused(delta_package, box, keys[1], "another build")


def test_a_delta_for_a_base_the_box_lacks_is_refused(delta_package: Path, box: Path,
                                                     keys: tuple[Path, Path]) -> None:
    shutil.move(box / MODEL, box.parent / "elsewhere")
    (box / "other").mkdir()
    with pytest.raises(PackageRefused, match="does not have"):
        install(delta_package, box, keys[1], "1.0", smoke_test=False)
    assert [p.name for p in box.iterdir()] == ["other"]


def test_a_truncated_package_is_refused(delta_package: Path, box: Path, keys: tuple[Path, Path],
                                        tmp_path: Path) -> None:
    data = delta_package.read_bytes()
    (tmp_path / "cut.pkg").write_bytes(data[:len(data) // 2])
    refused(tmp_path / "cut.pkg", box, keys[1], "truncated")


def test_a_payload_whose_hash_is_not_the_signed_one_is_refused(
        delta_package: Path, box: Path, keys: tuple[Path, Path], tmp_path: Path) -> None:
    with tarfile.open(delta_package) as tar:
        payload = bytearray(tar.extractfile(package.DELTA).read())  # type: ignore[union-attr]
    payload[-100] ^= 0xFF
    rewrite(delta_package, tmp_path / "bad.pkg", {package.DELTA: bytes(payload)})
    refused(tmp_path / "bad.pkg", box, keys[1], "sha256 is not the signed one")


def test_a_package_for_a_newer_appliance_is_refused(keys: tuple[Path, Path],
                                                    models: dict[str, Path], box: Path,
                                                    tmp_path: Path) -> None:
    build(models["tuned"], MODEL, key_of(keys), tmp_path / "new.pkg", "99.0")
    refused(tmp_path / "new.pkg", box, keys[1], "needs appliance 99.0")


def test_the_cli_installs_a_package_and_refuses_a_bad_one_with_exit_2(
        delta_package: Path, box: Path, keys: tuple[Path, Path], tmp_path: Path) -> None:
    env = {**os.environ, "APPLIANCE_PATHS__MODELS": str(box),
           "APPLIANCE_UPDATE__KEYRING_DIR": str(keys[1]),
           "APPLIANCE_PATHS__DATA_DIR": str(tmp_path / "data"),
           "APPLIANCE_CONFIG": str(tmp_path / "none.toml")}
    run = [sys.executable, "-m", "appliance", "models", "install"]
    done = subprocess.run([*run, str(delta_package)], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    (tmp_path / "junk.pkg").write_bytes(b"not a tar")
    done = subprocess.run([*run, str(tmp_path / "junk.pkg")], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 2 and "not a readable package" in " ".join(done.stderr.split())
