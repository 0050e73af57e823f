"""Check the labelled retrieval corpus: every answer is in the document it names.

Run from the repository root: ``python bench/kb_corpus/check.py``. Exits 1 on any failure.
Stdlib only, so it runs before the project is installed.
"""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

HERE = Path(__file__).resolve().parent
DOCS = HERE / "docs"
QUESTIONS = HERE / "questions.json"
FIELDS = {"id", "lang", "question", "document", "answer"}
HIDDEN_TAGS = {"head", "script", "style"}
CJK = re.compile(r"[\u3400-\u9fff]")


class _VisibleText(HTMLParser):
    """The text a reader sees on an HTML page: no tags, no head, script or style."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self._hidden = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in HIDDEN_TAGS:
            self._hidden += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in HIDDEN_TAGS and self._hidden:
            self._hidden -= 1

    def handle_data(self, data: str) -> None:
        if not self._hidden:
            self.parts.append(data)


def collapse(text: str) -> str:
    return " ".join(text.split())


def document_text(path: Path) -> str:
    raw = path.read_text(encoding="utf-8")
    if path.suffix.lower() in {".html", ".htm"}:
        parser = _VisibleText()
        parser.feed(raw)
        parser.close()
        raw = " ".join(parser.parts)
    return collapse(raw)


def is_text(value: object) -> bool:
    return isinstance(value, str) and bool(value.strip())


def language(text: str) -> str:
    letters = sum(ch.isalpha() for ch in text)
    return "zh" if letters and len(CJK.findall(text)) > 0.3 * letters else "en"


def size(text: str, lang: str) -> str:
    if lang == "zh":
        return f"{len(CJK.findall(text))} Chinese characters"
    return f"{len(text.split())} words"


def main() -> int:
    failures: list[str] = []
    warnings: list[str] = []
    texts = {p.name: document_text(p) for p in sorted(DOCS.iterdir()) if p.is_file()}
    langs = {name: language(text) for name, text in texts.items()}
    questions = json.loads(QUESTIONS.read_text(encoding="utf-8"))
    if not isinstance(questions, list):
        print("FAIL questions.json is not a JSON list")
        return 1

    ids: Counter[str] = Counter()
    per_lang: Counter[str] = Counter()
    per_doc: Counter[str] = Counter()
    for n, q in enumerate(questions):
        if not isinstance(q, dict) or set(q) != FIELDS or not all(map(is_text, q.values())):
            failures.append(f"entry {n}: needs exactly the non-empty strings {sorted(FIELDS)}")
            continue
        qid, lang, doc, answer = q["id"], q["lang"], q["document"], collapse(q["answer"])
        ids[qid] += 1
        per_lang[lang] += 1
        per_doc[doc] += 1
        if lang not in {"en", "zh"}:
            failures.append(f"{qid}: lang {lang!r} is neither 'en' nor 'zh'")
        elif (lang == "zh") != bool(CJK.search(q["question"])):
            failures.append(f"{qid}: question is not written in {lang}")
        if doc not in texts:
            failures.append(f"{qid}: no document docs/{doc}")
            continue
        if lang != langs[doc]:
            failures.append(f"{qid}: {lang} question names a {langs[doc]} document {doc}")
        if not 3 <= len(answer) <= 40:
            failures.append(f"{qid}: answer is {len(answer)} characters, not 3-40")
        if answer not in texts[doc]:
            failures.append(f"{qid}: answer {answer!r} not found verbatim in {doc}")
        elsewhere = [name for name, text in texts.items() if name != doc and answer in text]
        if elsewhere:
            warnings.append(f"{qid}: answer {answer!r} also occurs in {', '.join(elsewhere)}")

    failures += [f"id {qid} used {count} times" for qid, count in ids.items() if count > 1]
    warnings += [f"docs/{name} has no question" for name in texts if not per_doc[name]]

    for name, text in texts.items():
        print(f"{name:45} {langs[name]} {size(text, langs[name]):>24} {per_doc[name]:3} questions")
    counts = ", ".join(f"{lang} {count}" for lang, count in sorted(per_lang.items()))
    print(f"{len(questions)} questions: {counts}")
    for line in warnings:
        print("warning", line)
    for line in failures:
        print("FAIL", line)
    print("FAILED" if failures else "OK")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
