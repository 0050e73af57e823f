"""``python -m image build|verify|lock``: the Makefile's image targets call these."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True)


@app.command()
def build(out: Annotated[Path | None, typer.Option(help="Output directory.")] = None) -> None:
    """Build the disk image, root filesystem, update bundle and manifest."""
    from image.build import build as run_build
    from image.spec import BuildInputs

    manifest = run_build(BuildInputs.from_env(out))
    for name, entry in manifest["files"].items():  # type: ignore[union-attr]
        typer.echo(f"{entry['sha256']}  {entry['size']:>12}  {name}")


@app.command()
def verify(out: Annotated[Path | None, typer.Option(help="Output directory.")] = None) -> None:
    """Build twice from the same inputs and compare every output byte for byte."""
    from image.verify import verify as run_verify

    raise typer.Exit(run_verify(out))


@app.command()
def lock() -> None:
    """Resolve image.toml's packages afresh and record every version in packages.lock."""
    from image.lock import relock

    relock()


if __name__ == "__main__":
    app()
