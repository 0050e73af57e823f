"""Bring an operator's own model onto the box (``appliance models import``).

The source is a Hugging Face folder (``config.json`` and safetensors weights; pickled
``*.bin`` weights are refused, since loading them runs code) or a GGUF file, which
transformers reads (``gguf_file=``) and dequantizes into a Hugging Face folder first.
optimum-intel then exports OpenVINO IR with NNCF weight compression (int8, int4, or fp16
without compression) and the tokenizer and detokenizer through openvino-tokenizers: the same
``optimum-cli export openvino`` an operator would run, with its progress bars. Symmetric int4
(``--sym``, group 64 or per-channel) is what OpenVINO documents for the NPU.

The export runs in a child process (torch stays out of the caller; OpenVINO names nodes from
a per-process counter, so a fresh process writes the same bytes for the same input), in a
scratch folder renamed into place once the engine has loaded it and generated a token, so an
interrupted or broken import leaves the models directory as it was. The sidecar records the
source's hash, the options and the sizes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from appliance.models.inspect import IR_MODEL_FILE, SIDECAR_FILE, ModelFacts, ir_facts
from appliance.models.registry import is_valid_id, size_on_disk

Weights = Literal["int4", "int8", "fp16"]
TOKENIZER_FILES = ("openvino_tokenizer.xml", "openvino_detokenizer.xml")
GGUF_CONTROL_TOKEN = 3  # tokenizer.ggml.token_type of the special tokens
HF_FORM = "hf"  # inside the scratch folder: a GGUF's Hugging Face form, removed afterwards


class ImportRefused(ValueError):
    """The source or the options cannot make a model; phrased for the operator."""


@dataclass(frozen=True)
class ImportOptions:
    weights: Weights = "int8"
    sym: bool = False
    group_size: int | None = None  # int4: weights per scale (optimum's default 128); -1 per channel
    ratio: float | None = None  # int4: share of the layers in int4, the rest int8

    def check(self) -> None:
        if self.weights not in ("int4", "int8", "fp16"):
            raise ImportRefused(f"--weights must be int4, int8 or fp16, not {self.weights!r}")
        if self.weights != "int4" and (self.group_size is not None or self.ratio is not None):
            raise ImportRefused("--group-size and --ratio apply to --weights int4 only")
        if self.weights == "fp16" and self.sym:
            raise ImportRefused("--sym applies to int4 and int8 weights, not fp16")
        if self.group_size is not None and self.group_size != -1 and \
                (self.group_size <= 0 or self.group_size % 16):
            raise ImportRefused(f"--group-size must be -1 (per channel) or a positive multiple "
                                f"of 16, not {self.group_size}")
        if self.ratio is not None and not 0.0 < self.ratio <= 1.0:
            raise ImportRefused(f"--ratio must be in (0, 1], not {self.ratio}")

    def cli_arguments(self) -> list[str]:
        """``optimum-cli export openvino`` options for these weights."""
        args = ["--weight-format", self.weights]
        if self.sym:
            args.append("--sym")
        if self.group_size is not None:
            args += ["--group-size", str(self.group_size)]
        if self.weights == "int4":
            args += ["--ratio", str(self.ratio if self.ratio is not None else 1.0)]
        return args

    def describe(self) -> str:
        if self.weights == "fp16":
            return "fp16"
        kind = "sym" if self.sym else "asym"
        group = "" if self.weights == "int8" else (
            "-channel" if self.group_size == -1 else f"-g{self.group_size or 128}")
        return f"{self.weights}-{kind}{group}"


@dataclass(frozen=True)
class Imported:
    id: str
    folder: Path
    source_bytes: int
    model_bytes: int  # the IR's weights (openvino_model.bin)
    facts: ModelFacts


def source_kind(source: Path) -> Literal["gguf", "hf"]:
    """What the source is, or ImportRefused saying what is wrong with it."""
    if source.is_file():
        if source.suffix.lower() != ".gguf":
            raise ImportRefused(f"{source} is a file but not a .gguf; give a GGUF file or a "
                                "Hugging Face folder")
        with source.open("rb") as handle:
            if handle.read(4) != b"GGUF":
                raise ImportRefused(f"{source} does not start with the GGUF magic bytes")
        return "gguf"
    if not source.is_dir():
        raise ImportRefused(f"{source} does not exist")
    if not (source / "config.json").is_file():
        raise ImportRefused(f"{source} holds no config.json: not a Hugging Face model folder")
    if not any(source.glob("*.safetensors")):
        pickled = sorted(p.name for p in source.glob("*.bin"))
        if pickled:
            raise ImportRefused(f"{source} has pickled weights only ({', '.join(pickled)}): "
                                "loading them can run code. Convert them to safetensors first")
        raise ImportRefused(f"{source} holds no *.safetensors weights")
    return "hf"


def sha256_of(source: Path) -> str:
    """Of the file, or of a folder's files (names and contents, in name order)."""
    digest = hashlib.sha256()
    files = [source] if source.is_file() else sorted(p for p in source.rglob("*") if p.is_file())
    for path in files:
        if source.is_dir():
            digest.update(path.relative_to(source).as_posix().encode() + b"\0")
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def import_model(source: Path, model_id: str, models_dir: Path, options: ImportOptions,
                 replace: bool = False) -> Imported:
    """Export ``source`` to ``<models_dir>/<model_id>/``; ImportRefused when it cannot be."""
    options.check()
    if not is_valid_id(model_id):
        raise ImportRefused(f"{model_id!r} is not a valid model id (lowercase letters, digits, "
                            "'.', '_' and '-', at most 64)")
    source = source.expanduser().resolve()
    kind = source_kind(source)
    target = models_dir / model_id
    if (models_dir / f"{model_id}.gguf").exists():
        raise ImportRefused(f"{model_id!r} is the id of a GGUF model in {models_dir}")
    if target.exists() and not replace:
        raise ImportRefused(f"model {model_id!r} exists in {models_dir}; --replace replaces it")
    if importlib.util.find_spec("optimum") is None:
        raise ImportRefused("importing needs optimum-intel (pip install '.[models]'; make setup "
                            "does this)")
    scratch = models_dir / f".{model_id}.importing"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    try:
        digest = sha256_of(source)
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
               "PYTHONHASHSEED": "0"}
        # stdout and stderr pass through: optimum's and NNCF's progress bars are the import's.
        done = subprocess.run([sys.executable, "-m", __name__, kind, str(source), str(scratch),
                               *options.cli_arguments()], env=env)
        if done.returncode != 0:
            raise ImportRefused(f"optimum-intel could not export {source} (exit "
                                f"{done.returncode}; its messages are above)")
        shutil.rmtree(scratch / HF_FORM, ignore_errors=True)
        for name in (IR_MODEL_FILE, *TOKENIZER_FILES):
            if not (scratch / name).is_file():
                raise ImportRefused(f"the export of {source} wrote no {name}")
        check_serves(scratch)
        facts = dataclasses.replace(ir_facts(scratch), quantization=options.describe())
        imported = Imported(model_id, target, size_on_disk(source),
                            (scratch / IR_MODEL_FILE).with_suffix(".bin").stat().st_size, facts)
        (scratch / SIDECAR_FILE).write_text(json.dumps({
            "id": model_id, "source": str(source), "source_kind": kind,
            "source_sha256": digest, "source_bytes": imported.source_bytes,
            "model_bytes": imported.model_bytes, "options": asdict(options),
            "facts": facts.to_json()}, indent=2))
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    shutil.rmtree(target, ignore_errors=True)
    scratch.rename(target)
    return imported


def check_serves(folder: Path) -> None:
    """The engine's own pipeline loads the export and generates a token, or it is refused."""
    import openvino_genai

    try:
        pipeline = openvino_genai.LLMPipeline(str(folder), "CPU")
        config = openvino_genai.GenerationConfig()
        config.max_new_tokens = 1
        pipeline.generate("Hello", config)
    except RuntimeError as exc:
        raise ImportRefused(f"OpenVINO GenAI cannot serve the export: {exc}") from None


def gpt2_tokenizer(path: Path) -> Any | None:
    """The Hugging Face tokenizer of a GGUF whose vocabulary is byte-level BPE
    (``tokenizer.ggml.model = gpt2``), built from the file's own tokens, merges and special
    tokens; None for other vocabularies. transformers (5.5) reads such a file as a
    SentencePiece vocabulary (Metaspace, CodeLlama's special tokens, eos = bos), so every
    space became the unknown token and generation never met its end token.
    The pre-tokenizer follows llama.cpp's ``tokenizer.ggml.pre``: GPT-2's split, with digits
    one by one first for SmolLM ("smollm")."""
    import gguf
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    reader = gguf.GGUFReader(str(path))

    def field(name: str) -> Any:
        item = reader.fields.get(name)
        return item.contents() if item is not None else None

    if field("tokenizer.ggml.model") != "gpt2":
        return None
    tokens: list[str] = list(field("tokenizer.ggml.tokens"))
    merges = [tuple(m.split(" ", 1)) for m in field("tokenizer.ggml.merges") or []]
    types = list(field("tokenizer.ggml.token_type") or [])
    bpe = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges,
                               byte_fallback=False))
    split = [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]
    if field("tokenizer.ggml.pre") == "smollm":
        split.insert(0, pre_tokenizers.Digits(individual_digits=True))
    bpe.pre_tokenizer = pre_tokenizers.Sequence(split)
    bpe.decoder = decoders.ByteLevel()
    bpe.add_special_tokens([AddedToken(tokens[i], special=True, normalized=False)
                            for i, kind in enumerate(types) if kind == GGUF_CONTROL_TOKEN])

    def token(name: str) -> str | None:
        index = field(f"tokenizer.ggml.{name}_token_id")
        return tokens[int(index)] if index is not None else None

    return PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token=token("bos"), eos_token=token("eos"),
        unk_token=token("unknown"), pad_token=token("padding"),
        chat_template=field("tokenizer.chat_template"), add_bos_token=bool(
            field("tokenizer.ggml.add_bos_token")), clean_up_tokenization_spaces=False)


def hugging_face_form(gguf: Path, folder: Path) -> None:
    """A GGUF's weights (dequantized by transformers) and tokenizer as a Hugging Face folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = gpt2_tokenizer(gguf) or \
        AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def _export(kind: str, source: str, output: str, cli_arguments: list[str]) -> None:
    """The child's work: a GGUF to its Hugging Face form, then optimum-cli's export."""
    if kind == "gguf":
        hf = Path(output) / HF_FORM
        hugging_face_form(Path(source), hf)
        source = str(hf)
    from optimum.commands.optimum_cli import main

    sys.argv = ["optimum-cli", "export", "openvino", "--model", source,
                "--task", "text-generation-with-past", *cli_arguments, output]
    main()


if __name__ == "__main__":
    _export(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:])
