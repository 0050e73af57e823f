"""``appliance models``: the models on this box."""

from __future__ import annotations

import json
from pathlib import Path
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




@models_app.command("import")
def models_import(
        source: Annotated[Path, typer.Argument(help="A Hugging Face folder (safetensors) or a "
                                                    "GGUF file.")],
        model_id: Annotated[str, typer.Option("--id", help="The id it is served as.")],
        weights: Annotated[str, typer.Option(help="int4, int8 or fp16 (no compression).")
                           ] = "int8",
        sym: Annotated[bool, typer.Option("--sym", help="Symmetric quantization (no zero "
                                                        "points; what the NPU wants).")] = False,
        group_size: Annotated[int | None, typer.Option(help="int4: weights per scale; -1 "
                                                            "per channel.")] = None,
        ratio: Annotated[float | None, typer.Option(help="int4: share of layers in int4, the "
                                                         "rest int8.")] = None,
        replace: Annotated[bool, typer.Option("--replace", help="Replace a model of that "
                                                                "id.")] = False,
        config: ConfigOption = None) -> None:
    """Export a model to OpenVINO IR with optimum-intel, its weights compressed with NNCF, into
    the models directory; the engine serves it as ID (engine.model)."""
    from appliance.models.importer import ImportOptions, ImportRefused, import_model

    settings = load(config).settings
    options = ImportOptions(weights, sym, group_size, ratio)  # type: ignore[arg-type]
    try:
        imported = import_model(source, model_id, settings.paths.models_dir, options, replace)
    except ImportRefused as exc:
        err_console.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from None
    console.print(f"{imported.id}: {imported.facts.quantization} "
                  f"({imported.facts.weights} in the IR), {imported.model_bytes / 2**20:.1f} MiB "
                  f"of weights from {imported.source_bytes / 2**20:.1f} MiB -> {imported.folder}")


@models_app.command("evaluate")
def models_evaluate(
        model_id: Annotated[str, typer.Argument(help="The model to evaluate.")],
        reference: Annotated[str, typer.Option(help="The model it is compared with (e.g. its "
                                                    "fp16 import).")],
        out: Annotated[Path | None, typer.Option(help="JSON path (the plot goes beside it); "
                                                      "default <data_dir>/evaluations.")] = None,
        as_json: Annotated[bool, typer.Option("--json")] = False,
        config: ConfigOption = None) -> None:
    """Size, perplexity, next-token agreement and greedy-answer agreement of a model against
    its reference, and whether "30 % of the size, over 90 % of the quality" holds for it."""
    from appliance.models import registry
    from appliance.models.evaluate import evaluate, plot

    settings = load(config).settings
    folders = {}
    for name in (model_id, reference):
        try:
            entry = registry.find(settings.paths.models_dir, name)
        except registry.UnknownModel as exc:
            err_console.print(f"[red]error:[/red] {escape(str(exc))}")
            raise typer.Exit(2) from None
        if entry.ir_dir is None:
            err_console.print(f"[red]error:[/red] {name} is not prepared as OpenVINO IR "
                              f"(appliance models prepare {name})")
            raise typer.Exit(2)
        folders[name] = entry.ir_dir
    with console.status("evaluating") as status:
        result = evaluate(model_id, folders[model_id], reference, folders[reference],
                          progress=lambda stage: status.update(f"evaluating: {stage}"))
    path = out or settings.paths.data_dir / "evaluations" / f"{model_id}-vs-{reference}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result.to_json(), indent=2, ensure_ascii=False))
    plotted = plot([result], path.with_suffix(".png"))
    if as_json:
        print(json.dumps(result.to_json(), indent=2, ensure_ascii=False))
        return
    table = Table("measure", model_id, reference, title=f"{model_id} against {reference}")
    table.add_row("weights", f"{result.model_bytes / 2**20:.1f} MiB",
                  f"{result.reference_bytes / 2**20:.1f} MiB ({result.size_ratio:.0%})")
    for lang in ("en", "zh"):
        table.add_row(f"perplexity ({lang})", f"{result.perplexity[lang]:.2f}",
                      f"{result.reference_perplexity[lang]:.2f}")
    table.add_row("next-token agreement", f"{result.next_token_agreement['all']:.1%}", "")
    table.add_row("greedy answers: same / similarity",
                  f"{result.exact_answers:.0%} / {result.answer_similarity:.2f}", "")
    console.print(table)
    console.print(result.claim["statement"])
    console.print(f"written: {path}" + (f" and {path.with_suffix('.png')}" if plotted else ""))


@models_app.command("package")
def models_package(
        model_id: Annotated[str, typer.Argument(help="The model (in the models directory).")],
        key: Annotated[Path, typer.Option(help="Ed25519 signing key (PEM), the update "
                                               "bundles' key.")],
        out: Annotated[Path, typer.Option(help="The package file to write.")],
        min_version: Annotated[str, typer.Option(help="Oldest appliance version that may "
                                                      "install it.")] = "0",
        base: Annotated[str | None, typer.Option(help="The model the boxes have (an id here, "
                                                      "or its folder): a delta against it.")
                        ] = None,
        delta: Annotated[str, typer.Option(help="auto (when smaller), always or never.")
                         ] = "auto",
        config: ConfigOption = None) -> None:
    """A signed package of a model, whole or as a delta against the one the boxes have."""
    from appliance.models.package import PackageRefused, build
    from appliance.update.errors import UpdateRefused
    from appliance.update.signing import load_private_key

    settings = load(config).settings
    models_dir = settings.paths.models_dir
    base_folder = None
    if base is not None:
        base_folder = Path(base) if Path(base).is_dir() else models_dir / base
    if delta not in ("auto", "always", "never"):
        err_console.print(f"[red]error:[/red] --delta must be auto, always or never, not {delta!r}")
        raise typer.Exit(2)
    try:
        with console.status(f"packaging {model_id}"):
            manifest = build(models_dir / model_id, model_id, load_private_key(key), out,
                             min_version, base_folder, delta=delta)
    except (PackageRefused, UpdateRefused) as exc:
        err_console.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from None
    what = f"a delta against {manifest.base_id}" if manifest.base_id else "the whole model"
    console.print(f"{out}: {model_id}, {what}, {manifest.payload_size / 2**20:.1f} MiB")


@models_app.command("install")
def models_install(package: Annotated[Path, typer.Argument(help="A signed model package.")],
                   config: ConfigOption = None) -> None:
    """Check a model package (signature against update.keyring_dir, version, hashes, base)
    and install it into the models directory; any refusal changes nothing."""
    from appliance.models.package import PackageRefused, install
    from appliance.version import running_version

    settings = load(config).settings
    try:
        with console.status(f"installing {package}"):
            manifest = install(package, settings.paths.models_dir, settings.update.keyring_dir,
                               running_version(settings.update.release_file))
    except PackageRefused as exc:
        err_console.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from None
    console.print(f"{manifest.id}: installed in {settings.paths.models_dir / manifest.id}")
