"""Extracting an uploaded document: its text, normalised, or one typed refusal that names
the file and what went wrong, whatever bytes arrive under whatever name."""

from __future__ import annotations

import contextlib
import io
import random
import zipfile

import pytest

from appliance.kb.extract import (
    MB,
    DocumentError,
    DocumentTooLarge,
    EmptyDocument,
    EncryptedPdf,
    NotText,
    UnreadableDocument,
    UnsupportedType,
    extract,
)
from tests.kb.documents import cjk_font, encrypted, pdf, scanned_pdf, word

LIMIT = 10 * MB
CHINESE = "退货政策：自购买之日起三十天内，未使用的商品可以全额退款。请保留收据。"


def text_of(filename: str, data: bytes) -> str:
    return extract(filename, data, LIMIT).text


def refusal(filename: str, data: bytes, **limits: int) -> DocumentError:
    with pytest.raises(DocumentError) as refused:
        extract(filename, data, limits.pop("max_bytes", LIMIT), **limits)
    return refused.value


# -- kinds and limits ----------------------------------------------------------------------

@pytest.mark.parametrize(("filename", "kind"), [
    ("notes.txt", "txt"), ("NOTES.TXT", "txt"), ("notes.text", "txt"), ("a.md", "md"),
    ("a.Markdown", "md"), ("page.html", "html"), ("page.HTM", "html"),
    ("uploads/2024/notes.txt", "txt"), ("C:\\Users\\a\\notes.md", "md")])
def test_the_kind_follows_the_extension_whatever_its_case(filename: str, kind: str) -> None:
    assert extract(filename, b"hello", LIMIT).kind == kind


def test_an_unsupported_type_is_refused_listing_what_is_accepted() -> None:
    refused = refusal("setup.exe", b"MZ\x90\x00")
    assert isinstance(refused, UnsupportedType) and refused.code == "unsupported_type"
    assert "setup.exe" in str(refused)
    assert all(kind in str(refused) for kind in (".pdf", ".docx", ".txt", ".md", ".html"))


def test_a_name_without_an_extension_is_unsupported() -> None:
    assert isinstance(refusal("README", b"hello"), UnsupportedType)


def test_a_file_over_the_limit_is_refused_with_its_size_and_the_limit_in_mb() -> None:
    refused = refusal("big.txt", b"a" * (3 * MB), max_bytes=2 * MB)
    assert isinstance(refused, DocumentTooLarge) and refused.code == "too_large"
    assert "big.txt" in str(refused) and "3.0 MB" in str(refused) and "2.0 MB" in str(refused)


def test_a_file_just_over_the_limit_does_not_read_as_equal_to_it() -> None:
    refused = refusal("big.txt", b"a" * (2 * MB + 5000), max_bytes=2 * MB)
    assert "2.005 MB" in str(refused) and "2.000 MB" in str(refused)


def test_a_file_at_the_limit_is_taken() -> None:
    assert extract("full.txt", b"a" * 1000, 1000).text == "a" * 1000


def test_an_empty_file_is_refused_as_empty() -> None:
    refused = refusal("blank.txt", b"")
    assert isinstance(refused, EmptyDocument) and refused.code == "empty_document"
    assert "blank.txt" in str(refused) and "empty" in str(refused)


def test_a_file_of_only_whitespace_is_refused_as_empty() -> None:
    assert isinstance(refusal("blank.md", b" \r\n\t\n "), EmptyDocument)


@pytest.mark.parametrize(("error", "code"), [
    (UnsupportedType, "unsupported_type"), (DocumentTooLarge, "too_large"),
    (EmptyDocument, "empty_document"), (NotText, "not_text"), (EncryptedPdf, "encrypted_pdf"),
    (UnreadableDocument, "unreadable")])
def test_every_refusal_is_a_value_error_with_a_stable_code(error: type[DocumentError],
                                                           code: str) -> None:
    refused = error("a.pdf", "a.pdf: no")
    assert isinstance(refused, ValueError) and refused.code == code
    assert refused.filename == "a.pdf"


# -- text files ----------------------------------------------------------------------------

def test_text_is_normalised_to_lf_single_spaces_and_one_blank_line() -> None:
    raw = b"  First   line\t here  \r\nsecond line\r\n\r\n\r\n\r\nNext    paragraph\r\n"
    assert text_of("a.txt", raw) == "First line here\nsecond line\n\nNext paragraph"


def test_text_is_nfc_normalised() -> None:
    assert text_of("a.txt", "Cafe\u0301".encode()) == "Caf\u00e9"


def test_gbk_encoded_chinese_text_is_decoded() -> None:
    assert text_of("政策.txt", CHINESE.encode("gbk")) == CHINESE


def test_utf8_with_a_byte_order_mark_loses_the_mark() -> None:
    assert text_of("a.txt", b"\xef\xbb\xbf" + "naïve".encode()) == "naïve"


def test_utf16_with_a_byte_order_mark_is_decoded() -> None:
    assert text_of("a.txt", "Returns 退货".encode("utf-16")) == "Returns 退货"


def test_a_binary_file_named_txt_is_refused_as_not_text() -> None:
    png = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + random.Random(1).randbytes(4000)
    refused = refusal("photo.txt", png)
    assert isinstance(refused, NotText) and refused.code == "not_text"
    assert "photo.txt" in str(refused) and "looks like a binary file" in str(refused)


def test_bytes_that_decode_as_nothing_are_not_text_even_without_nul_bytes() -> None:
    noise = bytes(b or 1 for b in random.Random(2).randbytes(4000))
    assert isinstance(refusal("data.md", noise), NotText)


def test_markdown_keeps_its_heading_lines_and_text() -> None:
    raw = b"# Returns\n\nYou have **30 days**.\n\n## Shoes\n\nUnworn only.\n"
    assert text_of("policy.md", raw) == ("# Returns\n\nYou have **30 days**.\n\n## Shoes\n\n"
                                         "Unworn only.")


def test_markdown_drops_images_and_html_comments() -> None:
    raw = b"Before ![logo](img/logo.png) after.<!-- draft:\nremove me -->\n\nEnd."
    assert text_of("a.md", raw) == "Before after.\n\nEnd."


def test_markdown_links_keep_their_text_not_their_address() -> None:
    assert text_of("a.md", b"See [the form](https://x.test/f) today.") == "See the form today."


# -- html ----------------------------------------------------------------------------------

PAGE = b"""<!doctype html><html><head><title>Shop</title><style>p { color: red }</style>
<script>var tracking = 1;</script></head><body><nav><a href="/">Home</a> | About</nav>
<h1>Returns</h1><p>You can return goods
   within <b>30</b> days.</p><!-- internal note -->
<table><tr><th>Item</th><th>Days</th></tr><tr><td>Shoes</td><td>14</td></tr></table>
<ul><li>Keep the receipt</li><li>Use the box</li></ul><script>track()</script></body></html>"""


def test_html_drops_scripts_styles_navigation_head_and_comments() -> None:
    text = text_of("shop.html", PAGE)
    for gone in ("tracking", "track()", "color", "Home", "About", "Shop", "internal note"):
        assert gone not in text


def test_html_keeps_headings_paragraphs_and_table_cells_apart() -> None:
    assert text_of("shop.html", PAGE) == ("Returns\n\nYou can return goods within 30 days.\n\n"
                                          "Item\nDays\n\nShoes\n14\n\n"
                                          "Keep the receipt\nUse the box")


def test_html_in_the_charset_it_declares_is_decoded() -> None:
    page = ('<html><head><meta charset="gbk"></head><body><p>' + CHINESE + "</p></body></html>")
    assert text_of("zh.htm", page.encode("gbk")) == CHINESE


def test_html_line_breaks_start_new_lines() -> None:
    assert text_of("a.html", b"<p>Main street 5<br>Berlin</p>") == "Main street 5\nBerlin"


# -- docx ----------------------------------------------------------------------------------

def test_docx_paragraphs_and_table_cells_come_in_document_order() -> None:
    data = word("Returns policy", [["Item", "Days"], ["Shoes", "14"]], "Keep the receipt.")
    assert text_of("policy.docx", data) == ("Returns policy\n\nItem\nDays\n\nShoes\n14\n\n"
                                            "Keep the receipt.")


def test_docx_has_no_pages() -> None:
    extracted = extract("policy.DOCX", word("Hello"), LIMIT)
    assert extracted.kind == "docx" and extracted.pages is None


def test_a_truncated_docx_is_refused_as_unreadable() -> None:
    data = word("Returns policy " * 200)
    refused = refusal("policy.docx", data[:len(data) // 2])
    assert isinstance(refused, UnreadableDocument) and refused.code == "unreadable"
    assert "policy.docx" in str(refused) and "damaged" in str(refused)


def test_a_zip_that_is_no_word_file_is_unreadable() -> None:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("notes.txt", "hello")
    assert isinstance(refusal("fake.docx", out.getvalue()), UnreadableDocument)


def test_a_docx_that_unpacks_past_the_limit_is_too_large() -> None:
    refused = refusal("bomb.docx", word("a" * 200_000), max_unpacked=100_000)
    assert isinstance(refused, DocumentTooLarge) and "unpacks to" in str(refused)


def test_a_docx_without_text_is_empty() -> None:
    assert isinstance(refusal("blank.docx", word("", "  ")), EmptyDocument)


# -- pdf -----------------------------------------------------------------------------------

def test_pdf_text_comes_from_every_page_with_the_page_count() -> None:
    extracted = extract("manual.pdf", pdf("Returns within 30 days.", "Shipping is free."),
                        LIMIT)
    assert extracted.kind == "pdf" and extracted.pages == 2
    assert extracted.text == "Returns within 30 days.\n\nShipping is free."


def test_a_pdf_with_more_pages_than_allowed_is_too_large() -> None:
    refused = refusal("archive.pdf", pdf("one", "two", "three"), max_pages=2)
    assert isinstance(refused, DocumentTooLarge)
    assert "3 pages" in str(refused) and "2 pages" in str(refused)


def test_encrypted_pdf_is_refused_as_encrypted() -> None:
    refused = refusal("secret.pdf", encrypted(pdf("Salaries"), user_password="s3cret"))
    assert isinstance(refused, EncryptedPdf) and refused.code == "encrypted_pdf"
    assert "secret.pdf" in str(refused) and "password" in str(refused)


def test_a_pdf_locked_only_against_editing_is_read() -> None:
    assert text_of("locked.pdf", encrypted(pdf("Opening hours"), user_password="")) == (
        "Opening hours")


def test_a_truncated_pdf_is_refused_as_unreadable_with_the_reason() -> None:
    data = pdf("Returns within 30 days. " * 40)
    refused = refusal("broken.pdf", data[:len(data) // 2])
    assert isinstance(refused, UnreadableDocument) and refused.code == "unreadable"
    assert "broken.pdf" in str(refused) and "(" in str(refused)


def test_a_scanned_pdf_without_a_text_layer_is_empty_and_says_so() -> None:
    refused = refusal("scan.pdf", scanned_pdf())
    assert isinstance(refused, EmptyDocument)
    assert "scan.pdf" in str(refused) and "no text layer" in str(refused)


def test_text_under_a_pdf_name_is_unreadable() -> None:
    assert isinstance(refusal("notes.pdf", b"just some text, not a PDF"), UnreadableDocument)


@pytest.mark.skipif(cjk_font() is None, reason="no font with Chinese glyphs on this machine")
def test_a_chinese_pdf_gives_its_chinese_text() -> None:
    assert CHINESE[:10] in text_of("政策.pdf", pdf(CHINESE, font=cjk_font()))


@pytest.mark.parametrize("filename", ["a.pdf", "a.docx", "a.txt", "a.md", "a.html"])
def test_garbage_under_any_name_is_refused_only_as_a_document_error(filename: str) -> None:
    rng = random.Random(filename)
    valid = pdf("Returns within 30 days.") if filename.endswith(".pdf") else word("Returns")
    for _ in range(30):
        damaged = bytearray(valid)
        for _ in range(20):
            damaged[rng.randrange(len(damaged))] = rng.randrange(256)
        for data in (bytes(damaged), rng.randbytes(rng.randrange(1, 3000))):
            with contextlib.suppress(DocumentError):
                extract(filename, data, LIMIT)
