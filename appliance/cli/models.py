"""``appliance models``: the models on this box."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from appliance.cli.common import ConfigOption, console, err_console, load, setup_logging

models_app = typer.Typer(no_args_is_help=True, help="Models on this box.")


def print_models(models: list[dict[str, Any]]) -> None:
    table = Table("id", "format", "quantization", "size", "context", "prepared", "path",
                  title="Models")
    for m in models:
        table.add_row(m["id"], m["format"], m["quantization"], f"{m['size_bytes'] / 2**20:.1f} MiB",
                      str(m["context_length"]), "yes" if m["prepared"] else "no", m["path"])
    console.print(table)


@models_app.command("list")
def models_list(config: ConfigOption = None,
                as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Models in the models directory, with size, format and quantization."""
    from appliance.models import registry
    from appliance.models.default import DefaultModelMissing, link_default_model

    settings = load(config).settings
    try:
        link_default_model(settings.paths.models_dir)
    except DefaultModelMissing as exc:
        err_console.print(f"[yellow]warning:[/yellow] {escape(str(exc))}")
    rows = [
        {"id": e.id, "format": e.facts.format, "quantization": e.facts.quantization,
         "size_bytes": e.size_bytes, "context_length": e.facts.context_length,
         "prepared": e.prepared, "path": str(e.source)}
        for e in registry.scan(settings.paths.models_dir)
    ]
    if as_json:
        print(json.dumps(rows, indent=2))
    else:
        print_models(rows)


@models_app.command("prepare")
def models_prepare(model: Annotated[str | None, typer.Argument(help="Model id.")] = None,
                   config: ConfigOption = None) -> None:
    """Convert a model to OpenVINO IR now (the engine would do it on first start); without an
    id, the served LLM and the embedding model."""
    from appliance.engine.loader import prepare_model
    from appliance.models.default import DefaultModelMissing
    from appliance.models.embedding import EmbeddingModelMissing, prepare_embedding
    from appliance.models.registry import UnknownModel

    settings = load(config).settings
    setup_logging()
    try:
        with console.status(f"preparing {model or settings.engine.model}"):
            entry, seconds = prepare_model(settings, model)
    except (UnknownModel, DefaultModelMissing) as exc:
        err_console.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from None
    state = f"converted in {seconds:.1f} s" if seconds else "already prepared"
    console.print(f"{entry.id}: {state} -> {entry.ir_dir}")
    embedding_id = settings.kb.embedding_model
    if model is not None or not embedding_id:
        return
    try:
        with console.status(f"preparing {embedding_id} (optimum-intel)"):
            facts, seconds = prepare_embedding(settings.paths.models_dir, embedding_id)
    except EmbeddingModelMissing as exc:
        # The LLM serves without it (a plain host's release has neither the package nor
        # optimum-intel): say what is off and why, and do not fail the preparation.
        err_console.print(f"[yellow]warning:[/yellow] {escape(str(exc))}; the knowledge base "
                          "and /v1/embeddings stay off until the embedding model is prepared")
        return
    state = f"converted in {seconds:.1f} s" if seconds else "already prepared"
    console.print(f"{facts.id}: {state} -> {facts.folder} ({facts.dimensions} dimensions)")


