"""How much a compressed model keeps of its reference (``appliance models evaluate``).

Three measures, each of the model against the reference on the same inputs:
- perplexity on held-out text shipped with the project (``evaluation/heldout_*.txt``, written
  for it, English and Chinese), in windows of ``WINDOW`` tokens;
- next-token agreement: at every position of that text, whether the two models' most likely
  next token is the same (the share of positions);
- greedy answers to a fixed question set (``evaluation/questions.json``) through the
  engine's own pipeline (OpenVINO GenAI, chat template, greedy): exact matches, and the mean
  word-level similarity of the two answers (difflib's ratio).

The source article's claim, "about 30 % of the size, over 90 % of the accuracy", is checked
as: weights at most ``CLAIM_SIZE`` of the reference's and next-token agreement at least
``CLAIM_QUALITY``. Logits come from optimum-intel's OVModelForCausalLM on the CPU, so this
runs where optimum-intel is (a build machine), like ``models import``.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from appliance.kb.chunking import CJK
from appliance.models.inspect import IR_MODEL_FILE

WINDOW = 256
CLAIM_SIZE = 0.30
CLAIM_QUALITY = 0.90
ANSWER_TOKENS = 40
LANGUAGES = ("en", "zh")
_WORDS = re.compile(f"[{CJK}]|[^\\s{CJK}]+")  # a CJK character, or a word


@dataclass(frozen=True)
class Scores:
    perplexity: dict[str, float]
    reference_perplexity: dict[str, float]
    next_token_agreement: dict[str, float]
    tokens: dict[str, int]


@dataclass
class Evaluation:
    model: str
    reference: str
    model_bytes: int
    reference_bytes: int
    size_ratio: float
    perplexity: dict[str, float]
    reference_perplexity: dict[str, float]
    next_token_agreement: dict[str, float]
    tokens: dict[str, int]
    exact_answers: float
    answer_similarity: float
    answers: list[dict[str, Any]] = field(default_factory=list)
    claim: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def heldout(language: str) -> str:
    return (resources.files("appliance.models") / "evaluation" /
            f"heldout_{language}.txt").read_text(encoding="utf-8")


def questions() -> list[str]:
    return list(json.loads((resources.files("appliance.models") / "evaluation" /
                            "questions.json").read_text(encoding="utf-8")))


def weights_bytes(folder: Path) -> int:
    return (folder / IR_MODEL_FILE).with_suffix(".bin").stat().st_size


def similarity(a: str, b: str) -> float:
    """Word-level (character-level for Chinese) similarity of two answers, 0..1."""
    return difflib.SequenceMatcher(None, _WORDS.findall(a), _WORDS.findall(b),
                                   autojunk=False).ratio()


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def score_texts(model_logits: Callable[[np.ndarray], np.ndarray],
                reference_logits: Callable[[np.ndarray], np.ndarray],
                token_ids: dict[str, list[int]]) -> Scores:
    """Perplexities and next-token agreement over each language's tokens, window by window
    (each window's first token is context only)."""
    perplexity, reference, agreement, counts = {}, {}, {}, {}
    for language, ids in token_ids.items():
        nll = ref_nll = 0.0
        agreed = total = 0
        for start in range(0, max(len(ids) - 1, 0), WINDOW):
            window = np.asarray(ids[start:start + WINDOW + 1], dtype=np.int64)[None]
            if window.shape[1] < 2:
                break
            targets = window[0, 1:]
            ours = model_logits(window)[0, :-1].astype(np.float64)
            theirs = reference_logits(window)[0, :-1].astype(np.float64)
            positions = np.arange(len(targets))
            nll -= float(_log_softmax(ours)[positions, targets].sum())
            ref_nll -= float(_log_softmax(theirs)[positions, targets].sum())
            agreed += int((ours.argmax(-1) == theirs.argmax(-1)).sum())
            total += len(targets)
        perplexity[language] = round(float(np.exp(nll / total)), 3) if total else float("nan")
        reference[language] = round(float(np.exp(ref_nll / total)), 3) if total else float("nan")
        agreement[language] = round(agreed / total, 4) if total else float("nan")
        counts[language] = total
    return Scores(perplexity, reference, agreement, counts)


def claim(size_ratio: float, agreement: float) -> dict[str, Any]:
    size_ok = size_ratio <= CLAIM_SIZE
    quality_ok = agreement >= CLAIM_QUALITY
    verdict = ("holds" if size_ok and quality_ok else "does not hold")
    return {"size_at_most": CLAIM_SIZE, "quality_at_least": CLAIM_QUALITY,
            "size_ok": size_ok, "quality_ok": quality_ok, "holds": size_ok and quality_ok,
            "statement": (f"The claim (at most {CLAIM_SIZE:.0%} of the size, at least "
                          f"{CLAIM_QUALITY:.0%} of the quality) {verdict} for this model: "
                          f"{size_ratio:.0%} of the reference's weights, {agreement:.1%} "
                          "next-token agreement with it.")}


def _ov_logits(folder: Path) -> Callable[[np.ndarray], np.ndarray]:
    from optimum.intel import OVModelForCausalLM

    model = OVModelForCausalLM.from_pretrained(folder, device="CPU", compile=True)

    def logits(ids: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            out = model(input_ids=torch.from_numpy(ids),
                        attention_mask=torch.ones_like(torch.from_numpy(ids)))
        return np.asarray(out.logits, dtype=np.float32)
    return logits


def _answers(folder: Path, asked: list[str]) -> list[str]:
    import openvino_genai

    pipeline = openvino_genai.LLMPipeline(str(folder), "CPU")
    config = openvino_genai.GenerationConfig()
    config.max_new_tokens = ANSWER_TOKENS
    config.do_sample = False
    return [str(pipeline.generate(question, config)).strip() for question in asked]


def evaluate(model_id: str, folder: Path, reference_id: str, reference: Path,
             progress: Callable[[str], None] = lambda _: None) -> Evaluation:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(reference)
    token_ids = {lang: list(tokenizer(heldout(lang))["input_ids"]) for lang in LANGUAGES}
    progress("loading both models")
    ours, theirs = _ov_logits(folder), _ov_logits(reference)
    progress("perplexity and next-token agreement on the held-out text")
    scores = score_texts(ours, theirs, token_ids)
    total = sum(scores.tokens.values())
    agreement = round(sum(scores.next_token_agreement[lang] * scores.tokens[lang]
                          for lang in LANGUAGES) / total, 4)
    progress("greedy answers to the question set")
    asked = questions()
    mine, reference_answers = _answers(folder, asked), _answers(reference, asked)
    pairs = [{"question": q, "reference": r, "model": m, "similarity": round(similarity(r, m), 3)}
             for q, r, m in zip(asked, reference_answers, mine, strict=True)]
    model_bytes, reference_bytes = weights_bytes(folder), weights_bytes(reference)
    size_ratio = round(model_bytes / reference_bytes, 4)
    return Evaluation(
        model=model_id, reference=reference_id, model_bytes=model_bytes,
        reference_bytes=reference_bytes, size_ratio=size_ratio,
        perplexity=scores.perplexity, reference_perplexity=scores.reference_perplexity,
        next_token_agreement={**scores.next_token_agreement, "all": agreement},
        tokens=scores.tokens,
        exact_answers=round(sum(p["model"] == p["reference"] for p in pairs) / len(pairs), 3),
        answer_similarity=round(float(np.mean([p["similarity"] for p in pairs])), 3),
        answers=pairs, claim=claim(size_ratio, agreement))


def plot(evaluations: list[Evaluation], path: Path) -> bool:
    """Size and quality of each model against its reference, with the claim's lines; False
    when matplotlib is not installed (the JSON is written either way)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    figure, axis = plt.subplots(figsize=(8, 4.5))
    measures = [("weights / reference", lambda e: e.size_ratio),
                ("next-token agreement", lambda e: e.next_token_agreement["all"]),
                ("reference ppl / ppl (en)", lambda e: e.reference_perplexity["en"]
                 / e.perplexity["en"]),
                ("answer similarity", lambda e: e.answer_similarity)]
    width = 0.8 / max(len(evaluations), 1)
    for n, evaluation in enumerate(evaluations):
        xs = [i + n * width for i in range(len(measures))]
        axis.bar(xs, [measure(evaluation) for _, measure in measures], width,
                 label=f"{evaluation.model} vs {evaluation.reference}")
    axis.axhline(CLAIM_QUALITY, color="green", linestyle="--", linewidth=1,
                 label=f"quality claim {CLAIM_QUALITY:.0%}")
    axis.axhline(CLAIM_SIZE, color="red", linestyle=":", linewidth=1,
                 label=f"size claim {CLAIM_SIZE:.0%}")
    axis.set_xticks([i + width * (len(evaluations) - 1) / 2 for i in range(len(measures))],
                    [name for name, _ in measures], fontsize=8)
    axis.set_ylim(0, 1.1)
    axis.set_title("Compressed model against its reference")
    axis.legend(fontsize=7, loc="lower right")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return True
