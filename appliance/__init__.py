"""Edge AI appliance: what runs on the box."""

from importlib.metadata import PackageNotFoundError, version

try:  # one source of truth: pyproject.toml's version, as installed
    __version__ = version("edge-appliance")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"
