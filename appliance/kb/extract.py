"""The text of an uploaded document (.txt, .md, .html, .pdf, .docx), or a typed refusal.

Uploads come from customers, so anything can arrive under any name: every way a file can be
wrong ends in one :class:`DocumentError` subclass with a stable ``code`` for the API and a
message that names the file and says what to do, never in a library's own exception. The
text comes out normalised (NFC, LF line ends, single spaces, at most one blank line between
paragraphs), since the chunker splits on blank lines and the embedder sees every space.
"""

from __future__ import annotations

import io
import re
import unicodedata
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import docx
import pypdf
from bs4 import BeautifulSoup
from bs4.element import PreformattedString
from charset_normalizer import from_bytes
from docx.table import Table
from docx.text.paragraph import Paragraph

MB = 1024 * 1024
MAX_PAGES = 2000  # a manual is hundreds of pages; thousands is an archive, not a document
MAX_UNPACKED = 256 * MB  # a .docx is a zip: its parts unpacked, so a small bomb stays small

KINDS = {".txt": "txt", ".text": "txt", ".md": "md", ".markdown": "md", ".html": "html",
         ".htm": "html", ".pdf": "pdf", ".docx": "docx"}
ACCEPTED = ", ".join(sorted(KINDS))


@dataclass(frozen=True)
class Extracted:
    text: str
    kind: str  # txt, md, html, pdf or docx
    pages: int | None  # a PDF's page count; other kinds have no pages


class DocumentError(ValueError):
    """A document that cannot be taken, with a stable ``code`` for the API's error body."""

    code: str = "document_error"

    def __init__(self, filename: str, message: str) -> None:
        super().__init__(message)
        self.filename = filename


class UnsupportedType(DocumentError):
    code = "unsupported_type"


class DocumentTooLarge(DocumentError):
    code = "too_large"


class EmptyDocument(DocumentError):
    code = "empty_document"


class NotText(DocumentError):
    code = "not_text"


class EncryptedPdf(DocumentError):
    code = "encrypted_pdf"


class UnreadableDocument(DocumentError):
    code = "unreadable"


def extract(filename: str, data: bytes, max_bytes: int, *, max_pages: int = MAX_PAGES,
            max_unpacked: int = MAX_UNPACKED) -> Extracted:
    """The normalised text of ``data``, read as its name's extension says."""
    kind = kind_of(filename)
    if len(data) > max_bytes:
        raise DocumentTooLarge(filename, f"{filename} is {_size(len(data), max_bytes)}; the "
                               f"limit is {_size(max_bytes, len(data))}")
    if not data:
        raise EmptyDocument(filename, f"{filename} is empty (0 bytes)")
    pages = None
    if kind == "pdf":
        raw, pages = _pdf(filename, data, max_pages)
    elif kind == "docx":
        raw = _docx(filename, data, max_unpacked)
    elif kind == "html":
        raw = _html(_decode(filename, data, _declared_charset(data)))
    elif kind == "md":
        raw = _markdown(_decode(filename, data))
    else:
        raw = _decode(filename, data)
    text = normalise(raw)
    if not text:
        if kind == "pdf":
            raise EmptyDocument(filename, f"{filename} has no text layer (a scanned PDF?): "
                                "run it through OCR first, or upload the text")
        raise EmptyDocument(filename, f"{filename} has no text in it")
    return Extracted(text, kind, pages)


def kind_of(filename: str) -> str:
    """The kind its extension names, case-insensitively; :class:`UnsupportedType` if none."""
    name = re.split(r"[\\/]", filename)[-1]
    kind = KINDS.get("." + name.rpartition(".")[2].lower()) if "." in name else None
    if kind is None:
        raise UnsupportedType(filename, f"{filename}: this type of file is not supported; "
                              f"upload one of {ACCEPTED}")
    return kind


def _size(count: int, other: int) -> str:
    """``count`` bytes in MB, with enough decimals to tell it from ``other``."""
    for decimals in (1, 2, 3):
        if f"{count / MB:.{decimals}f}" != f"{other / MB:.{decimals}f}":
            return f"{count / MB:.{decimals}f} MB"
    return f"{count} bytes"


# -- text files --------------------------------------------------------------------------

BOMS = ((b"\xef\xbb\xbf", "utf-8"), (b"\xff\xfe\x00\x00", "utf-32-le"),
        (b"\x00\x00\xfe\xff", "utf-32-be"), (b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be"))
CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")


def _decode(filename: str, data: bytes, declared: str | None = None) -> str:
    """The text of a file sent as text: by its byte-order mark, as UTF-8, as the encoding it
    declares, or as charset-normalizer guesses (GBK, Shift-JIS, cp1252...), in that order;
    :class:`NotText` for bytes that are no text in any of them (an image, a program)."""
    binary = NotText(filename, f"{filename} looks like a binary file, not text: upload it "
                     "in its own format (pdf, docx) or save it as plain text")
    for bom, encoding in BOMS:
        if data.startswith(bom):
            try:
                return _checked(data[len(bom):].decode(encoding), binary)
            except UnicodeDecodeError:
                raise binary from None
    if b"\x00" in data:
        raise binary
    for named in ("utf-8", declared):
        if named:
            try:
                return _checked(data.decode(named), binary)
            except (UnicodeDecodeError, LookupError):
                pass
    best = from_bytes(data).best()
    if best is None:
        raise binary
    return _checked(str(best), binary)


def _checked(text: str, binary: NotText) -> str:
    """``text``, unless control characters say the decoding only made sense of noise."""
    if len(CONTROL.findall(text)) > max(2, len(text) // 100):
        raise binary
    return text


MARKUP = re.compile(r"<!--.*?-->"  # HTML comments
                    r"|!\[[^\]\n]*\]\([^)\n]*\)"  # images: ![alt](src)
                    r"|!\[[^\]\n]*\]\[[^\]\n]*\]", re.DOTALL)  # images by reference
LINK = re.compile(r"\[([^\]\n]+)\]\([^)\n]*\)")  # [text](url): the text is what reads


def _markdown(text: str) -> str:
    return LINK.sub(r"\1", MARKUP.sub("", text))


# -- html ----------------------------------------------------------------------------------

DROPPED = ("script", "style", "nav", "head", "noscript", "template", "svg", "iframe")
PARAGRAPHS = ("p", "h1", "h2", "h3", "h4", "h5", "h6", "table", "tr", "ul", "ol", "dl", "pre",
              "blockquote", "section", "article", "header", "footer", "main", "aside",
              "figure", "form", "hr")
LINES = ("br", "div", "li", "td", "th", "dt", "dd", "caption", "figcaption", "address",
         "label", "option")
LINE, PARAGRAPH = "\x01", "\x02"  # marks around blocks, resolved once all are in
BREAKS = re.compile(r"(?:\s*[\x01\x02])+\s*")
CHARSET = re.compile(rb"<meta[^>]+charset\s*=\s*[\"']?\s*([A-Za-z0-9_.:-]+)", re.IGNORECASE)


def _declared_charset(data: bytes) -> str | None:
    found = CHARSET.search(data[:4096])
    return found.group(1).decode("ascii") if found else None


def _html(markup: str) -> str:
    """The page's readable text: its blocks (headings, paragraphs, table rows) apart as
    paragraphs, list items and table cells on lines of their own, inline elements running
    on, no scripts or menus."""
    soup = BeautifulSoup(markup, "html.parser")
    for dropped in soup.find_all(DROPPED):
        dropped.decompose()
    for string in soup.find_all(string=True):
        if isinstance(string, PreformattedString):  # comments, the doctype, <?xml ...?>
            string.extract()
            continue
        spaced = re.sub(r"[\x01\x02]", "", str(string))
        if string.find_parent(["pre", "textarea"]) is None:
            spaced = re.sub(r"\s+", " ", spaced)  # source line breaks are spaces in HTML
        string.replace_with(spaced)
    for tags, mark in ((PARAGRAPHS, PARAGRAPH), (LINES, LINE)):
        for element in soup.find_all(tags):
            element.insert_before(mark)
            element.insert_after(mark)
    # Blocks next to each other are one break, the widest of their marks.
    return BREAKS.sub(lambda run: "\n\n" if PARAGRAPH in run.group() else "\n",
                      soup.get_text())


# -- pdf -----------------------------------------------------------------------------------

def _pdf(filename: str, data: bytes, max_pages: int) -> tuple[str, int]:
    """Every page's text layer, pages apart as paragraphs, and the page count."""
    try:
        reader = pypdf.PdfReader(io.BytesIO(data))
        locked = reader.is_encrypted and not reader.decrypt("")  # an owner password only
    except Exception as error:  # a damaged file can make a parser raise anything
        raise _unreadable(filename, error) from error
    if locked:
        raise EncryptedPdf(filename, f"{filename} is password protected: remove the password "
                           "(print or export it to a new PDF) and upload it again")
    try:
        count = len(reader.pages)
    except Exception as error:
        raise _unreadable(filename, error) from error
    if count > max_pages:
        raise DocumentTooLarge(filename, f"{filename} has {count} pages; the limit is "
                               f"{max_pages} pages: split it into parts")
    texts = []
    for page in range(count):
        try:
            texts.append(reader.pages[page].extract_text())
        except Exception as error:
            raise _unreadable(filename, error, f"page {page + 1}: ") from error
    return "\n\n".join(texts), count


def _unreadable(filename: str, error: Exception, where: str = "") -> UnreadableDocument:
    reason = str(error) or type(error).__name__
    return UnreadableDocument(filename, f"{filename} could not be read, it may be damaged "
                              f"({where}{reason}): open and save it again, then upload it")


# -- docx ----------------------------------------------------------------------------------

def _docx(filename: str, data: bytes, max_unpacked: int) -> str:
    """The paragraphs and table rows (a cell a line) in the order they stand in the document."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as package:
            unpacked = sum(part.file_size for part in package.infolist())
    except Exception as error:
        raise _unreadable(filename, error) from error
    if unpacked > max_unpacked:
        raise DocumentTooLarge(filename, f"{filename} unpacks to "
                               f"{_size(unpacked, max_unpacked)}; the limit is "
                               f"{_size(max_unpacked, unpacked)}")
    try:
        document = docx.Document(io.BytesIO(data))
        return "\n\n".join(_blocks(document))
    except Exception as error:
        raise _unreadable(filename, error) from error


class _Blocks(Protocol):  # a document's body, or a table cell
    def iter_inner_content(self) -> Iterator[Paragraph | Table]: ...


def _blocks(container: _Blocks) -> Iterator[str]:
    """Paragraph texts and table rows (each merged cell once), nested tables included."""
    for block in container.iter_inner_content():
        if isinstance(block, Table):
            for row in block.rows:
                cells: list[str] = []
                seen: set[int] = set()
                for cell in row.cells:
                    if id(cell._tc) not in seen:  # a merged cell repeats across the row
                        seen.add(id(cell._tc))
                        cells.extend(_blocks(cell))
                yield "\n".join(cells)
        else:
            yield block.text


# -- normalising ---------------------------------------------------------------------------

SPACES = re.compile(r"[^\S\n\u3000]+")  # runs of blanks but newlines and ideographic spaces
INVISIBLE = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f\u200b\ufeff]")


def normalise(text: str) -> str:
    """NFC, LF line ends, no invisible characters, single spaces, no blanks at a line's ends,
    at most one blank line between paragraphs, none at either end."""
    text = unicodedata.normalize("NFC", text)
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\f", "\n\n")
    text = SPACES.sub(" ", INVISIBLE.sub("", text))
    text = "\n".join(line.strip(" ") for line in text.split("\n"))
    return re.sub(r"\n{3,}", "\n\n", text).strip()
