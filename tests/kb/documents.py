"""Real documents made for the tests: PDFs written by fpdf2 (and encrypted by pypdf), Word
files written by python-docx, so extraction is tested on what those programs produce."""

from __future__ import annotations

import io
import shutil
import subprocess
from collections.abc import Sequence

import docx
import pypdf
from fpdf import FPDF


def pdf(*pages: str, font: str | None = None) -> bytes:
    """A PDF with one page of text per argument, in Helvetica or the TrueType ``font``."""
    document = FPDF()
    if font:
        document.add_font("cjk", fname=font)
    for text in pages:
        document.add_page()
        document.set_font("cjk" if font else "Helvetica", size=12)
        document.multi_cell(0, 8, text)
    return bytes(document.output())


def scanned_pdf() -> bytes:
    """A page as a scanner leaves it: drawn marks and no text layer."""
    document = FPDF()
    document.add_page()
    document.rect(20, 20, 120, 60, style="F")
    return bytes(document.output())


def encrypted(data: bytes, user_password: str, owner_password: str = "owner") -> bytes:
    writer = pypdf.PdfWriter(clone_from=pypdf.PdfReader(io.BytesIO(data)))
    writer.encrypt(user_password, owner_password, algorithm="AES-256")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def word(*blocks: str | Sequence[Sequence[str]]) -> bytes:
    """A .docx of paragraphs (strings) and tables (rows of cell texts), in that order."""
    document = docx.Document()
    for block in blocks:
        if isinstance(block, str):
            document.add_paragraph(block)
        else:
            table = document.add_table(rows=len(block), cols=len(block[0]))
            for r, row in enumerate(block):
                for c, text in enumerate(row):
                    table.cell(r, c).text = text
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def cjk_font() -> str | None:
    """A font file with Chinese glyphs on this machine, if it has one."""
    if shutil.which("fc-list") is None:
        return None
    listed = subprocess.run(["fc-list", ":lang=zh", "file"], capture_output=True, text=True,
                            check=False).stdout
    files = sorted(line.split(":")[0] for line in listed.splitlines()
                   if line.split(":")[0].endswith((".ttf", ".otf")))
    return files[0] if files else None
