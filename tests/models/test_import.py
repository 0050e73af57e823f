"""`appliance models import` and `evaluate`, for real: the default model's GGUF brought to its
Hugging Face form, exported by optimum-intel as fp16, int8 and int4, evaluated, and served."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from appliance.models import registry
from appliance.models.default import packaged_gguf
from tests.conftest import Appliance

pytestmark = pytest.mark.e2e


def cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "APPLIANCE_PATHS__DATA_DIR": str(data_dir),
           "APPLIANCE_CONFIG": str(data_dir / "none.toml")}
    return subprocess.run([sys.executable, "-m", "appliance", "models", *args], env=env,
                          capture_output=True, text=True, timeout=900)


def said(done: subprocess.CompletedProcess[str]) -> str:
    """What the CLI wrote to stderr, with the console's line wrapping undone."""
    return " ".join(done.stderr.split())


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data directory with the default model imported as fp16 (from the GGUF), and as int8
    and int4-sym (from its Hugging Face form, the folder an operator would bring)."""
    data_dir = tmp_path_factory.mktemp("imports")
    hf = tmp_path_factory.mktemp("hf") / "smollm2"
    # In a child, as the import itself does: torch does not load beside ansible's patches
    # (which other test modules import into this process).
    subprocess.run([sys.executable, "-c", "import sys; from pathlib import Path; from "
                    "appliance.models.importer import hugging_face_form as f; "
                    "f(Path(sys.argv[1]), Path(sys.argv[2]))", str(packaged_gguf()), str(hf)],
                   check=True, capture_output=True, timeout=600)
    for model_id, source, options in (
            ("smollm2-fp16", packaged_gguf(), ["--weights", "fp16"]),
            ("smollm2-int8", hf, ["--weights", "int8"]),
            ("smollm2-int4", hf, ["--weights", "int4", "--sym", "--group-size", "64"])):
        done = cli(data_dir, "import", str(source), "--id", model_id, *options)
        assert done.returncode == 0, done.stderr[-3000:]
    return data_dir


@pytest.fixture(scope="module")
def evaluations(box: Path) -> dict[str, dict[str, Any]]:
    """int8 and int4 evaluated against the fp16 form."""
    results = {}
    for model_id in ("smollm2-int8", "smollm2-int4"):
        done = cli(box, "evaluate", model_id, "--reference", "smollm2-fp16", "--json")
        assert done.returncode == 0, done.stderr[-3000:]
        results[model_id] = json.loads(done.stdout)
    return results


def entry(box: Path, model_id: str) -> registry.ModelEntry:
    return registry.find(box / "models", model_id)


def test_an_imported_model_is_listed_with_its_compression(box: Path) -> None:
    assert (entry(box, "smollm2-int8").facts.quantization,
            entry(box, "smollm2-int4").facts.quantization,
            entry(box, "smollm2-fp16").facts.quantization) == \
        ("int8-asym", "int4-sym-g64", "fp16")
    assert entry(box, "smollm2-int4").facts.weights == "int4-sym"


def test_the_sidecar_names_the_source_by_its_hash(box: Path) -> None:
    sidecar = json.loads((box / "models/smollm2-fp16/appliance-model.json").read_text())
    assert sidecar["source_sha256"] == hashlib.sha256(packaged_gguf().read_bytes()).hexdigest()
    assert sidecar["source_kind"] == "gguf" and sidecar["options"]["weights"] == "fp16"


def test_compressed_weights_are_smaller_than_the_fp16_form(box: Path) -> None:
    sizes = {m: (box / "models" / m / "openvino_model.bin").stat().st_size
             for m in ("smollm2-fp16", "smollm2-int8", "smollm2-int4")}
    assert sizes["smollm2-int4"] < sizes["smollm2-int8"] < 0.6 * sizes["smollm2-fp16"]


def test_evaluate_reports_size_and_quality_against_the_reference(
        box: Path, evaluations: dict[str, dict[str, Any]]) -> None:
    result = evaluations["smollm2-int8"]
    assert 0.2 < result["size_ratio"] < 0.6
    assert result["next_token_agreement"]["all"] > 0.85  # int8 keeps most choices
    assert result["perplexity"]["en"] < 1.1 * result["reference_perplexity"]["en"]
    assert len(result["answers"]) == 12 and "statement" in result["claim"]
    assert (box / "evaluations/smollm2-int8-vs-smollm2-fp16.png").stat().st_size > 0


def test_int4_keeps_less_of_the_reference_than_int8(
        evaluations: dict[str, dict[str, Any]]) -> None:
    int4, int8 = evaluations["smollm2-int4"], evaluations["smollm2-int8"]
    assert int4["size_ratio"] < int8["size_ratio"]
    assert int4["next_token_agreement"]["all"] < int8["next_token_agreement"]["all"]


def test_an_imported_int4_model_is_served_and_answers(
        box: Path, start_appliance: Callable[..., Appliance]) -> None:
    appliance = start_appliance(APPLIANCE_PATHS__MODELS=str(box / "models"),
                                APPLIANCE_ENGINE__MODEL="smollm2-int4",
                                APPLIANCE_ENGINE__DEFAULT_MAX_TOKENS="16")
    models = httpx.get(f"{appliance.base_url}/v1/models", timeout=30).json()
    assert "smollm2-int4" in [m["id"] for m in models["data"]]
    reply = httpx.post(f"{appliance.base_url}/v1/messages", timeout=120, json={
        "id": "q1", "conversation": "imported", "text": "What is the capital of France?"})
    assert reply.status_code == 200 and reply.json()["reply"].strip()


def test_an_existing_id_is_refused_without_replace(box: Path) -> None:
    done = cli(box, "import", str(packaged_gguf()), "--id", "smollm2-int8")
    assert done.returncode == 2 and "--replace" in said(done)


def test_pickled_weights_are_refused(box: Path, tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x04pickle")
    done = cli(box, "import", str(tmp_path), "--id", "pickled")
    assert done.returncode == 2 and "pickled weights" in said(done)
    assert not (box / "models" / "pickled").exists()


def test_options_that_do_not_apply_are_refused(box: Path) -> None:
    done = cli(box, "import", str(packaged_gguf()), "--id", "odd", "--weights", "int8",
               "--group-size", "64")
    assert done.returncode == 2 and "int4 only" in said(done)


def test_a_file_that_is_not_a_model_is_refused(box: Path, tmp_path: Path) -> None:
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"not a model")
    done = cli(box, "import", str(fake), "--id", "fake")
    assert done.returncode == 2 and "magic" in said(done)


def test_evaluating_a_model_the_box_lacks_names_it(box: Path) -> None:
    done = cli(box, "evaluate", "nowhere", "--reference", "smollm2-fp16")
    assert done.returncode == 2 and "nowhere" in said(done)
