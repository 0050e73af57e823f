"""A document's text cut into chunks that fit the embedding model's window.

The embedder (MiniLM) reads at most 256 tokens and silently drops the rest, so a chunk is
measured in :func:`units`, an approximation of those tokens that needs no tokenizer and
works for text without spaces (Chinese, Japanese) as well as English. Chunks end at a
paragraph or sentence where one fits, and only a sentence longer than a chunk is cut inside,
between words or characters. Each chunk after the first repeats the last sentences of the
one before (the overlap), so a fact that straddles a cut is still whole in one chunk; and
each chunk is prefixed with the headings of its section, so "it costs 5 euros" found alone
still says what it is about.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass

# Scripts written without spaces, and their punctuation: each character is about a token.
CJK = ("\u3001-\u303f\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
       "\uff00-\uffef\U00020000-\U0002ffff")
ATOM = re.compile(f"([{CJK}])|[^\\s{CJK}]+")  # a CJK character, or a word with its marks
WORD_TENTHS, CJK_TENTHS = 13, 10  # a word is about 1.3 tokens, a CJK character 1
WORD_CHARS = 8  # a word longer than this is several words' worth of tokens (a URL, a hash)

PARAGRAPH_BREAK = re.compile(r"\n[^\S\n]*\n\s*")
MARKDOWN_HEADING = re.compile(r"^[^\S\n]*(#{1,6})[^\S\n]+\S.*$", re.MULTILINE)
SENTENCE_END = re.compile(r"[.!?][\"'”’)\]]*(?=\s)|[。！？；][”’」』）\"']*|\n")
NOT_A_HEADING_END = tuple(".!?。！？；,，、…")
HEADING_UNITS = 12  # a line this short, on its own before a paragraph, is taken as a heading
SHORT_LINE = 7  # a short-line heading's level: below every markdown level


def units(text: str) -> int:
    """About how many tokens MiniLM's tokenizer (WordPiece) makes of ``text``: a CJK
    character counts 1, a word (with the punctuation on it) 1.3, a long one 1.3 per 8
    characters. An approximation: chunks sized with it fit the 256-token window with some
    room, without loading the tokenizer."""
    return math.ceil(_tenths(text, 0, len(text)) / 10)


@dataclass(frozen=True)
class Chunk:
    ordinal: int
    text: str  # ``heading``, a newline, then the source from ``start``; just that without one
    start: int  # where the chunk's own text begins in the source
    heading: str = ""  # the headings of its section, when the chunk does not begin with them


@dataclass(frozen=True)
class _Piece:
    """A sentence, or a part of one too long for a chunk: what chunks are packed from."""

    start: int
    end: int
    tenths: int
    is_heading: bool
    prefix: str  # the headings above it, prefixed to a chunk that begins with it
    prefix_tenths: int


def chunk(text: str, size: int, overlap: int) -> list[Chunk]:
    """``text`` in chunks of at most ``size`` units (headings included), each but the first
    opening with about ``overlap`` units of whole sentences from the end of the one before;
    every character of ``text`` but whitespace is in at least one chunk."""
    if size < 2 or not 0 <= overlap < size:
        raise ValueError(f"chunk size {size} and overlap {overlap}: the size must be at "
                         "least 2 units and the overlap from 0 to less than the size")
    limit = size * 10
    chunks: list[Chunk] = []
    current: list[_Piece] = []
    for piece in _pieces(text, size):
        if current and not _fits([*current, piece], limit):
            headings = _trailing_headings(current)
            done = current[:len(current) - headings] or current  # a heading never ends one
            chunks.append(_chunk(text, len(chunks), done))
            carried = current[len(done):] or _overlap(done, overlap * 10)
            while carried and not _fits([*carried, piece], limit):
                if carried[0].is_heading:  # headings too long to go with what follows them
                    chunks.append(_chunk(text, len(chunks), carried))
                    carried = []
                else:
                    carried = carried[1:]
            current = [*carried, piece]
        else:
            current.append(piece)
    if current:
        chunks.append(_chunk(text, len(chunks), current))
    return chunks


def _fits(pieces: list[_Piece], limit: int) -> bool:
    return pieces[0].prefix_tenths + sum(p.tenths for p in pieces) <= limit


def _trailing_headings(pieces: list[_Piece]) -> int:
    count = 0
    while count < len(pieces) and pieces[-1 - count].is_heading:
        count += 1
    return count


def _overlap(done: list[_Piece], limit: int) -> list[_Piece]:
    """The most trailing sentences of ``done`` within ``limit`` tenths, never all of it."""
    taken = 0
    used = 0
    for piece in reversed(done[1:]):
        if piece.is_heading or used + piece.tenths > limit:
            break
        used += piece.tenths
        taken += 1
    return done[len(done) - taken:] if taken else []


def _chunk(text: str, ordinal: int, pieces: list[_Piece]) -> Chunk:
    start, prefix = pieces[0].start, pieces[0].prefix
    body = text[start:pieces[-1].end]
    return Chunk(ordinal, f"{prefix}\n{body}" if prefix else body, start, prefix)


# -- pieces --------------------------------------------------------------------------------

def _pieces(text: str, size: int) -> Iterator[_Piece]:
    """Sentences in order, each with the headings it stands under; a sentence that would
    not fit a chunk with those headings is cut into parts that do."""
    limit = size * 10
    headings: list[tuple[int, str]] = []  # the open sections: level, heading line
    blocks = _blocks(text)
    for start, end, level in blocks:
        if level:
            while headings and headings[-1][0] >= level:
                headings.pop()
        prefix = _prefix([line for _, line in headings], size)
        prefix_tenths = _tenths(prefix, 0, len(prefix))
        for s, e in _sentences(text, start, end):
            for part_start, part_end, tenths in _parts(text, s, e, limit - prefix_tenths):
                yield _Piece(part_start, part_end, tenths, level > 0, prefix, prefix_tenths)
        if level:
            headings.append((level, text[start:end]))


def _prefix(lines: list[str], size: int) -> str:
    """The section's headings, the outermost dropped until they take at most a quarter of a
    chunk: the nearest heading says the most."""
    while lines and units("\n".join(lines)) > size // 4:
        lines = lines[1:]
    return "\n".join(lines)


def _blocks(text: str) -> list[tuple[int, int, int]]:
    """Paragraphs and heading lines as (start, end, level): level 0 for a paragraph, 1-6 for
    a markdown heading, :data:`SHORT_LINE` for a short line standing before a paragraph."""
    blocks: list[tuple[int, int, int]] = []
    for start, end in _paragraphs(text):
        for heading in MARKDOWN_HEADING.finditer(text, start, end):
            blocks.extend((s, e, 0) for s, e in _trimmed(text, start, heading.start()))
            blocks.extend((s, e, len(heading.group(1))) for s, e in
                          _trimmed(text, heading.start(), heading.end()))
            start = heading.end()
        blocks.extend((s, e, 0) for s, e in _trimmed(text, start, end))
    for index, (start, end, level) in enumerate(blocks[:-1]):
        line = text[start:end]
        if (not level and "\n" not in line and not line.endswith(NOT_A_HEADING_END)
                and units(line) <= HEADING_UNITS):
            blocks[index] = (start, end, SHORT_LINE)
    return blocks


def _paragraphs(text: str) -> Iterator[tuple[int, int]]:
    start = 0
    for gap in PARAGRAPH_BREAK.finditer(text):
        yield from _trimmed(text, start, gap.start())
        start = gap.end()
    yield from _trimmed(text, start, len(text))


def _sentences(text: str, start: int, end: int) -> Iterator[tuple[int, int]]:
    """English sentences end in .!? before a space; Chinese ones in 。！？； with no space."""
    for stop in SENTENCE_END.finditer(text, start, end):
        yield from _trimmed(text, start, stop.end())
        start = stop.end()
    yield from _trimmed(text, start, end)


def _parts(text: str, start: int, end: int, limit: int) -> Iterator[tuple[int, int, int]]:
    """[start, end) as (start, end, tenths) parts within ``limit`` tenths: whole if it fits,
    else cut between words (English) or characters (CJK), a word longer than a chunk cut
    between its characters."""
    whole = _tenths(text, start, end)
    if whole <= limit:
        yield start, end, whole
        return
    first, last, used = -1, -1, 0
    for atom in ATOM.finditer(text, start, end):
        weight = _weight(atom)
        if first >= 0 and used + weight > limit:
            yield first, last, used
            first = -1
        if weight > limit:
            step = WORD_CHARS * (limit // WORD_TENTHS)
            for cut in range(atom.start(), atom.end(), step):
                stop = min(cut + step, atom.end())
                yield cut, stop, _tenths(text, cut, stop)
            continue
        if first < 0:
            first, used = atom.start(), 0
        used += weight
        last = atom.end()
    if first >= 0:
        yield first, last, used


def _trimmed(text: str, start: int, end: int) -> Iterator[tuple[int, int]]:
    """[start, end) without the whitespace at its ends; nothing if that is all it is."""
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    if start < end:
        yield start, end


def _tenths(text: str, start: int, end: int) -> int:
    return sum(_weight(atom) for atom in ATOM.finditer(text, start, end))


def _weight(atom: re.Match[str]) -> int:
    if atom.group(1):
        return CJK_TENTHS
    return WORD_TENTHS * math.ceil(len(atom.group()) / WORD_CHARS)
