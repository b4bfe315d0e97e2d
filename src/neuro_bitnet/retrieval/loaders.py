"""Turn a file into text sections (with heading path and location) by file type.

A loader never raises anything but `SkipFile`: every problem with a file becomes a reason to skip
it, which the indexer counts and reports.
"""

from __future__ import annotations

import codecs
import os
import re
import stat
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Callable

SNIFF_BYTES = 8192
DEFAULT_MAX_FILE_BYTES = 20 * 1024 * 1024  # larger files are skipped unless --max-file-size says otherwise

MARKDOWN_EXT = {".md", ".markdown", ".mdx", ".mkd"}
RST_EXT = {".rst", ".rest"}
HTML_EXT = {".html", ".htm", ".xhtml"}
TEXT_EXT = {".txt", ".text", ".log", ".csv", ".tsv", ".org", ".adoc", ".tex", ".srt", ".vtt"}
CODE_EXT = {
    ".py", ".pyi", ".js", ".jsx", ".ts", ".tsx", ".mjs", ".cjs", ".go", ".rs", ".c", ".h", ".cc",
    ".cpp", ".hpp", ".cxx", ".java", ".kt", ".kts", ".scala", ".rb", ".php", ".cs", ".swift",
    ".m", ".mm", ".lua", ".pl", ".r", ".jl", ".sh", ".bash", ".zsh", ".fish", ".ps1", ".sql",
    ".toml", ".yaml", ".yml", ".json", ".ini", ".cfg", ".conf", ".xml", ".css", ".scss",
    ".vue", ".svelte", ".dart", ".ex", ".exs", ".erl", ".hs", ".ml", ".clj", ".zig", ".nim",
    ".proto", ".graphql", ".tf", ".cmake", ".mk", ".gradle", ".el", ".vim",
}
CODE_NAMES = {"Makefile", "Dockerfile", "CMakeLists.txt", "Justfile", "Rakefile", "Gemfile"}
# Known binary formats: skipped without reading them.
BINARY_EXT = {
    ".png", ".jpg", ".jpeg", ".gif", ".bmp", ".ico", ".webp", ".tif", ".tiff", ".psd", ".mp3",
    ".wav", ".flac", ".ogg", ".mp4", ".mkv", ".avi", ".mov", ".webm", ".zip", ".gz", ".tgz",
    ".bz2", ".xz", ".zst", ".7z", ".rar", ".tar", ".jar", ".whl", ".exe", ".dll", ".so",
    ".dylib", ".o", ".a", ".pyc", ".class", ".bin", ".gguf", ".safetensors", ".onnx", ".pt",
    ".pth", ".npy", ".npz", ".pkl", ".sqlite", ".sqlite3", ".db", ".woff", ".woff2", ".ttf",
    ".otf", ".eot", ".iso", ".dmg", ".xls", ".xlsx", ".ppt", ".pptx", ".doc", ".odt",
}


class SkipFile(Exception):
    """Raised by a loader: the file is skipped for the given reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class Section:
    """A run of text from one place in a document."""

    text: str
    heading: str = ""  # heading path inside the document, e.g. "Install > From source"
    location: str = ""  # fixed location such as "page 3"; empty when line numbers apply
    start_line: int = 0  # 1-based line of the first character, 0 when lines do not apply


def file_kind(path: Path) -> str:
    """The loader kind for a path: markdown, rst, html, pdf, docx, code, text, binary or unknown."""
    ext = path.suffix.lower()
    if ext in MARKDOWN_EXT:
        return "markdown"
    if ext in RST_EXT:
        return "rst"
    if ext in HTML_EXT:
        return "html"
    if ext == ".pdf":
        return "pdf"
    if ext == ".docx":
        return "docx"
    if ext in CODE_EXT or path.name in CODE_NAMES:
        return "code"
    if ext in TEXT_EXT:
        return "text"
    if ext in BINARY_EXT:
        return "binary"
    return "unknown"


def load_file(path: Path, max_bytes: int) -> list[Section]:
    """Read `path` into sections; raise `SkipFile` with a reason when it cannot or should not be."""
    if file_kind(path) == "binary":
        raise SkipFile("binary file")
    return parse_bytes(path, read_bytes(path, max_bytes))


def parse_bytes(path: Path, data: bytes) -> list[Section]:
    """Sections of a file already read into memory (the type comes from `path`)."""
    kind = file_kind(path)
    if kind == "binary":
        raise SkipFile("binary file")
    if kind == "pdf":
        return _load_pdf(path, data)
    if kind == "docx":
        return _load_docx(path, data)
    if b"\x00" in data[:SNIFF_BYTES] and not data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise SkipFile("binary file")
    text = decode_text(data)
    if not text.strip():
        raise SkipFile("empty")
    loader: Callable[[str], list[Section]] = {
        "markdown": _split_markdown,
        "rst": _split_rst,
        "html": _load_html,
    }.get(kind, lambda t: [Section(t, start_line=1)])
    sections = [s for s in loader(text) if s.text.strip()]
    if not sections:
        raise SkipFile("no text")
    return sections


def read_bytes(path: Path, max_bytes: int) -> bytes:
    """The file's bytes, or `SkipFile` when it is too large or unreadable."""
    try:
        # O_NONBLOCK: opening a FIFO (or a device) must not wait for a writer; it is then refused.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with open(fd, "rb") as fh:
            st = os.fstat(fd)
            if stat.S_ISDIR(st.st_mode):
                raise SkipFile("is a directory")
            if not stat.S_ISREG(st.st_mode):
                raise SkipFile("not a regular file")
            if st.st_size > max_bytes:
                raise SkipFile(f"too large ({st.st_size:,} bytes > {max_bytes:,})")
            data = fh.read(max_bytes + 1)
    except PermissionError:
        raise SkipFile("permission denied") from None
    except IsADirectoryError:
        raise SkipFile("is a directory") from None
    except OSError as exc:
        raise SkipFile(f"unreadable ({exc.strerror or exc})") from None
    if len(data) > max_bytes:
        raise SkipFile(f"too large (> {max_bytes:,} bytes)")
    return data


def decode_text(data: bytes) -> str:
    """Decode UTF-8 (BOM optional) or BOM-marked UTF-16; anything else is skipped."""
    try:
        if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            text = data.decode("utf-16")
        else:
            text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise SkipFile("not UTF-8 text") from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


_FENCE = re.compile(r"^\s{0,3}(```|~~~)")
_ATX = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")


def _split_markdown(text: str) -> list[Section]:
    lines = text.split("\n")
    sections: list[Section] = []
    stack: list[tuple[int, str]] = []
    current: list[str] = []
    start = 1
    in_fence = False

    def flush(next_start: int) -> None:
        nonlocal current, start
        if current:
            sections.append(Section("\n".join(current), " > ".join(h for _, h in stack), "", start))
        current, start = [], next_start

    for i, line in enumerate(lines, 1):
        if _FENCE.match(line):
            in_fence = not in_fence
        m = None if in_fence else _ATX.match(line)
        if m:
            flush(i)
            level = len(m.group(1))
            stack = [(lv, h) for lv, h in stack if lv < level] + [(level, m.group(2))]
        current.append(line)
    flush(len(lines) + 1)
    return sections


_RST_ADORN = re.compile(r"^([=\-~^\"'`#*+.:_])\1{2,}\s*$")


def _split_rst(text: str) -> list[Section]:
    lines = text.split("\n")
    titles: dict[int, tuple[int, str]] = {}  # line index of title -> (level, title)
    order: list[str] = []
    for i in range(len(lines) - 1):
        title, under = lines[i].strip(), lines[i + 1]
        if title and not _RST_ADORN.match(lines[i]) and _RST_ADORN.match(under) and len(under.strip()) >= len(title):
            char = under.strip()[0]
            if char not in order:
                order.append(char)
            titles[i] = (order.index(char), title)
    sections: list[Section] = []
    stack: list[tuple[int, str]] = []
    current: list[str] = []
    start = 1
    for i, line in enumerate(lines):
        if i in titles:
            if current:
                sections.append(Section("\n".join(current), " > ".join(h for _, h in stack), "", start))
            level, title = titles[i]
            stack = [(lv, h) for lv, h in stack if lv < level] + [(level, title)]
            current, start = [], i + 1
        current.append(line)
    if current:
        sections.append(Section("\n".join(current), " > ".join(h for _, h in stack), "", start))
    return sections


class _HtmlText(HTMLParser):
    """Collects visible text, split into sections at h1-h6."""

    SKIP = {"script", "style", "noscript", "template", "svg", "head"}
    BLOCK = {"p", "div", "li", "br", "tr", "section", "article", "pre", "blockquote", "table", "ul", "ol", "dt", "dd"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.sections: list[Section] = []
        self.stack: list[tuple[int, str]] = []
        self.parts: list[str] = []
        self.skip_depth = 0
        self.heading_level = 0
        self.heading_parts: list[str] = []
        self.title = ""
        self.in_title = False

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag == "title":
            self.in_title = True
        if tag in self.SKIP:
            self.skip_depth += 1
        elif re.fullmatch(r"h[1-6]", tag):
            self._flush()
            self.heading_level, self.heading_parts = int(tag[1]), []
        elif tag in self.BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self.in_title = False
        if tag in self.SKIP:
            self.skip_depth = max(0, self.skip_depth - 1)
        elif re.fullmatch(r"h[1-6]", tag) and self.heading_level:
            title = " ".join("".join(self.heading_parts).split())
            level = self.heading_level
            self.stack = [(lv, h) for lv, h in self.stack if lv < level] + [(level, title)]
            self.parts.append(title + "\n")
            self.heading_level = 0
        elif tag in self.BLOCK:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if self.in_title:
            self.title += data
        if self.skip_depth:
            return
        if self.heading_level:
            self.heading_parts.append(data)
        else:
            self.parts.append(data)

    def _flush(self) -> None:
        raw = "".join(self.parts)
        text = "\n".join(" ".join(line.split()) for line in raw.split("\n"))
        text = re.sub(r"\n{3,}", "\n\n", text).strip()
        if text:
            heading = " > ".join(h for _, h in self.stack)
            self.sections.append(Section(text, heading, heading and f"§ {self.stack[-1][1]}"))
        self.parts = []

    def close(self) -> None:
        super().close()
        self._flush()


def _load_html(text: str) -> list[Section]:
    parser = _HtmlText()
    try:
        parser.feed(text)
        parser.close()
    except Exception as exc:  # html.parser is lenient; this guards against the odd assertion
        raise SkipFile(f"unparsable HTML ({exc})") from None
    return parser.sections


def _load_pdf(path: Path, data: bytes) -> list[Section]:
    try:
        import io
        import logging

        from pypdf import PdfReader
    except ImportError:
        raise SkipFile("PDF support needs pypdf, a dependency of neuro-bitnet (pip install pypdf)") from None
    logging.getLogger("pypdf").setLevel(logging.ERROR)
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            try:
                reader.decrypt("")
            except Exception:
                raise SkipFile("encrypted PDF") from None
        sections = []
        for number, page in enumerate(reader.pages, 1):
            text = (page.extract_text() or "").strip()
            if text:
                sections.append(Section(text, "", f"page {number}"))
    except SkipFile:
        raise
    except Exception as exc:
        raise SkipFile(f"unreadable PDF ({type(exc).__name__})") from None
    if not sections:
        raise SkipFile("PDF has no extractable text")
    return sections


def _load_docx(path: Path, data: bytes) -> list[Section]:
    try:
        import io

        import docx
    except ImportError:
        raise SkipFile(
            "DOCX support needs python-docx, a dependency of neuro-bitnet (pip install python-docx)"
        ) from None
    try:
        document = docx.Document(io.BytesIO(data))
        sections: list[Section] = []
        stack: list[tuple[int, str]] = []
        parts: list[str] = []

        def flush() -> None:
            if parts:
                heading = " > ".join(h for _, h in stack)
                sections.append(Section("\n\n".join(parts), heading, heading and f"§ {stack[-1][1]}"))
            parts.clear()

        for para in document.paragraphs:
            text = para.text.strip()
            style = (para.style.name if para.style is not None else "") or ""
            m = re.match(r"(?:Heading|Title)\s*(\d*)", style)
            if m and text:
                flush()
                level = int(m.group(1) or 0)
                stack = [(lv, h) for lv, h in stack if lv < level] + [(level, text)]
                parts.append(text)
            elif text:
                parts.append(text)
        for table in document.tables:
            for row in table.rows:
                cells = [c.text.strip() for c in row.cells if c.text.strip()]
                if cells:
                    parts.append(" | ".join(cells))
        flush()
    except Exception as exc:
        raise SkipFile(f"unreadable DOCX ({type(exc).__name__})") from None
    return sections
