"""A real plugin folder and real signing keys, as an author would make them."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from appliance.plugins.package import sign_plugin
from appliance.update import signing


@dataclass(frozen=True)
class Signer:
    key_path: Path
    keyring_dir: Path  # holds only the public key, as a box's plugins.keyring_dir does

    @property
    def key(self) -> signing.Ed25519PrivateKey:
        return signing.load_private_key(self.key_path)

    @property
    def keyring(self) -> signing.Keyring:
        return signing.load_keyring(self.keyring_dir)


def make_signer(where: Path) -> Signer:
    private, public = signing.generate_keypair(where / "author", "plugin-signing")
    keyring = where / "keyring"
    keyring.mkdir()
    shutil.copy(public, keyring / public.name)
    return Signer(private, keyring)


@pytest.fixture
def signer(tmp_path: Path) -> Signer:
    return make_signer(tmp_path / "signer")


@pytest.fixture
def stranger(tmp_path: Path) -> Signer:
    """Someone whose key no box trusts."""
    return make_signer(tmp_path / "stranger")


def write_plugin(folder: Path, name: str = "weather", version: str = "1.0.0",
                 network: tuple[str, ...] = ("api.weather.example",),
                 secrets: tuple[str, ...] = ("API_KEY",),
                 skill: str = "forecast") -> Path:
    """A minimal plugin: one skill with three examples, a program that answers it."""
    folder.mkdir(parents=True, exist_ok=True)
    hosts = ", ".join(f'"{h}"' for h in network)
    names = ", ".join(f'"{s}"' for s in secrets)
    (folder / "appliance-plugin.toml").write_text(f'''
[plugin]
name = "{name}"
version = "{version}"
description = "Tomorrow's weather for the branch's town."

[capabilities]
network = [{hosts}]
secrets = [{names}]

[[skills]]
name = "{skill}"
description = "The weather forecast for today or tomorrow."
[skills.examples]
en = ["Will it rain tomorrow?", "What is the weather like today?", "Do I need an umbrella?"]
''')
    (folder / "plugin.py").write_text("def forecast(request):\n    return 'sunny'\n")
    (folder / "data").mkdir(exist_ok=True)
    (folder / "data" / "towns.txt").write_text("Paris\nLyon\n")
    return folder


def signed_plugin(folder: Path, signer: Signer, **fields: Any) -> Path:
    write_plugin(folder, **fields)
    sign_plugin(folder, signer.key)
    return folder


@pytest.fixture
def plugin(tmp_path: Path, signer: Signer) -> Path:
    return signed_plugin(tmp_path / "src" / "weather", signer)
