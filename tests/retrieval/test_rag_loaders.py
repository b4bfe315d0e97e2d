"""Loaders per file type and the reasons files are skipped."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from neuro_bitnet.retrieval import loaders
from neuro_bitnet.retrieval.loaders import SkipFile, file_kind, load_file

MB = 1 << 20


def make_pdf(pages: list[str]) -> bytes:
    """A minimal valid PDF with one line of Helvetica text per page (correct xref offsets)."""
    objects: list[bytes] = []
    n_pages = len(pages)
    font_id = 3 + 2 * n_pages
    kids = " ".join(f"{3 + 2 * i} 0 R" for i in range(n_pages))
    objects.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    objects.append(f"<< /Type /Pages /Kids [{kids}] /Count {n_pages} >>".encode())
    for i, text in enumerate(pages):
        content = f"BT /F1 12 Tf 72 712 Td ({text}) Tj ET".encode()
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {4 + 2 * i} 0 R "
            f"/Resources << /Font << /F1 {font_id} 0 R >> >> >>".encode()
        )
        objects.append(b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream")
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{o:010d} 00000 n \n".encode() for o in offsets)
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


def test_markdown_sections_keep_heading_path_and_lines(tmp_path: Path) -> None:
    doc = tmp_path / "guide.md"
    doc.write_text("Intro line\n\n# Install\n\nStep one.\n\n## From source\n\n```\n# not a heading\n```\n"
                   "Build it.\n\n# Usage\n\nRun it.\n")
    sections = load_file(doc, MB)
    assert [s.heading for s in sections] == ["", "Install", "Install > From source", "Usage"]
    source = sections[2]
    assert source.start_line == 7 and "# not a heading" in source.text
    assert sections[3].text.startswith("# Usage")


def test_rst_headings(tmp_path: Path) -> None:
    doc = tmp_path / "a.rst"
    doc.write_text("Title\n=====\n\nHello.\n\nPart\n----\n\nBody text.\n\nOther\n=====\n\nMore.\n")
    sections = load_file(doc, MB)
    assert [s.heading for s in sections] == ["Title", "Title > Part", "Other"]


def test_html_visible_text_by_heading(tmp_path: Path) -> None:
    doc = tmp_path / "page.html"
    doc.write_text("<html><head><title>T</title><style>p{}</style></head><body><h1>Top</h1><p>Alpha &amp; "
                   "beta</p><script>var x=1;</script><h2>Sub</h2><p>Gamma</p></body></html>")
    sections = load_file(doc, MB)
    texts = " ".join(s.text for s in sections)
    assert "Alpha & beta" in texts and "Gamma" in texts
    assert "var x" not in texts and "p{}" not in texts
    assert sections[-1].heading == "Top > Sub" and sections[-1].location == "§ Sub"


def test_pdf_pages(tmp_path: Path) -> None:
    doc = tmp_path / "paper.pdf"
    doc.write_bytes(make_pdf(["First page words", "Second page words"]))
    sections = load_file(doc, MB)
    assert [s.location for s in sections] == ["page 1", "page 2"]
    assert "Second page" in sections[1].text


def test_corrupt_pdf_is_skipped(tmp_path: Path) -> None:
    doc = tmp_path / "broken.pdf"
    doc.write_bytes(b"%PDF-1.4\nthis is not really a pdf")
    with pytest.raises(SkipFile, match="PDF"):
        load_file(doc, MB)


def test_docx_headings_and_tables(tmp_path: Path) -> None:
    docx = pytest.importorskip("docx")
    document = docx.Document()
    document.add_heading("Report", level=1)
    document.add_paragraph("Revenue grew.")
    document.add_heading("Details", level=2)
    document.add_paragraph("Costs fell.")
    table = document.add_table(rows=1, cols=2)
    table.rows[0].cells[0].text, table.rows[0].cells[1].text = "Q1", "42"
    path = tmp_path / "report.docx"
    document.save(str(path))
    sections = load_file(path, MB)
    assert sections[0].heading == "Report" and "Revenue grew." in sections[0].text
    assert sections[-1].heading == "Report > Details" and "Q1 | 42" in sections[-1].text


def test_code_and_text_are_line_based(tmp_path: Path) -> None:
    code = tmp_path / "m.py"
    code.write_text("def f():\n    return 1\n")
    assert file_kind(code) == "code"
    assert load_file(code, MB)[0].start_line == 1
    assert file_kind(tmp_path / "Makefile") == "code"


@pytest.mark.parametrize(
    "name, data, reason",
    [
        ("img.png", b"\x89PNG....", "binary file"),
        ("data.bin2", b"abc\x00def" * 10, "binary file"),
        ("latin.txt", "café olé".encode("latin-1"), "not UTF-8 text"),
        ("empty.md", b"  \n\n", "empty"),
    ],
)
def test_bad_files_raise_skip_with_reason(tmp_path: Path, name: str, data: bytes, reason: str) -> None:
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(SkipFile) as info:
        load_file(path, MB)
    assert info.value.reason == reason


def test_utf16_with_bom_and_utf8_bom_are_read(tmp_path: Path) -> None:
    (tmp_path / "u16.txt").write_bytes("hola señor".encode("utf-16"))
    (tmp_path / "u8.txt").write_bytes(b"\xef\xbb\xbfhello")
    assert load_file(tmp_path / "u16.txt", MB)[0].text == "hola señor"
    assert load_file(tmp_path / "u8.txt", MB)[0].text == "hello"


def test_size_cap(tmp_path: Path) -> None:
    path = tmp_path / "big.txt"
    path.write_text("x" * 5000)
    with pytest.raises(SkipFile, match="too large"):
        load_file(path, 1000)


def test_permission_denied_is_a_skip(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "secret.txt"
    path.write_text("top secret")
    if os.geteuid() != 0:
        path.chmod(0)
    else:  # root reads anything: make open() fail the way it does for other users
        def denied(*args, **kwargs):
            raise PermissionError(13, "Permission denied")

        monkeypatch.setattr(loaders, "open", denied, raising=False)
    with pytest.raises(SkipFile, match="permission denied"):
        load_file(path, MB)
