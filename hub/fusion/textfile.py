"""Reading a city's CSV files as they really come: encoding, delimiter, truncation (issue 20).

French city offices export spreadsheets in Windows Latin-1 (cp1252) with ``;`` between
fields; downloads and copies get cut short. Before a row is read, one pass over the
bytes (decompressed when ``.gz``) settles the encoding (UTF-8 when every byte says so,
else cp1252, else Latin-1, with a warning naming the first non-UTF-8 byte; or the one
given, checked the same way) and whether the file ends with a line break. The delimiter
is the given one, else the one that splits the header into the mapping's columns.

Every refusal is a :class:`ValueError` naming the file, the row or line, the column and
the fix; the importer raises it before anything is stored (``hub/fusion/importer.py``:
one transaction per file).
"""

from __future__ import annotations

import codecs
import gzip
import io
import re
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, cast

__all__ = ["DELIMITERS", "TextFormat", "choose_delimiter", "open_binary", "open_text", "sniff_format"]

DELIMITERS = (",", ";", "\t", "|")
_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class TextFormat:
    """How to read one file: its encoding, whether its last line is complete, what to warn about."""

    encoding: str
    ends_with_newline: bool
    warning: str | None = None


def open_binary(path: Path) -> BinaryIO:
    """The file's bytes, decompressed when it is ``.gz``.

    Raises:
        ValueError: no such file, or not readable, with the path and the fix.
    """
    if not path.is_file():
        raise ValueError(f"{path}: no such file (working folder {Path.cwd()}): check the path")
    try:
        raw = gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb")  # noqa: SIM115  (the caller closes)
        return cast(BinaryIO, raw)  # both are binary files; typeshed types them apart
    except OSError as exc:
        raise ValueError(f"{path}: cannot be read ({exc.strerror}): check its permissions") from None


def _line_of(data: bytes, offset: int, lines_before: int) -> int:
    return lines_before + data.count(b"\n", 0, offset) + 1


def _check(path: Path, encoding: str) -> tuple[bool, str | None]:
    """(ends with a line break, where the first undecodable byte is, or None), in one pass."""
    decoder = codecs.getincrementaldecoder(encoding)()
    lines, last = 0, b""
    try:
        with open_binary(path) as fh:
            while chunk := fh.read(_CHUNK):
                try:
                    decoder.decode(chunk)
                except UnicodeDecodeError as exc:
                    line = _line_of(chunk, exc.start, lines)
                    return False, f"byte 0x{chunk[exc.start]:02X} on line {line}"
                lines += chunk.count(b"\n")
                last = chunk[-1:]
            decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return False, "the last bytes (the file ends inside a character: truncated?)"
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise ValueError(
            f"{path}: the compressed data ends early or is damaged ({exc}): the file looks truncated; "
            "copy or download it again (nothing imported)"
        ) from None
    return last in (b"\n", b"\r"), None


def _utf8_mark(path: Path) -> tuple[int, str] | None:
    """(line, character) of the first non-ASCII character when the whole file is valid UTF-8; else None."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    lines, first = 0, None
    with open_binary(path) as fh:
        while chunk := fh.read(_CHUNK):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError:
                return None
            if first is None and (m := re.search(rb"[\x80-\xff]", chunk)):
                char = chunk[m.start() : m.start() + 4].decode("utf-8", errors="ignore")[:1] or "?"
                first = (_line_of(chunk, m.start(), lines), char)
            lines += chunk.count(b"\n")
    return first


def _single_byte(name: str) -> bool:
    return not name.startswith(("utf", "ascii"))


def sniff_format(path: Path, encoding: str | None) -> TextFormat:
    """The encoding to read ``path`` with: ``encoding`` when given (checked), else detected.

    Raises:
        ValueError: an unknown encoding name, or a file the given encoding cannot read, with the fix.
    """
    if encoding is not None:
        try:
            name = codecs.lookup(encoding).name
        except LookupError:
            raise ValueError(
                f"--encoding {encoding!r} is not an encoding Python knows: use utf-8, cp1252 (Windows), "
                "latin-1 or another codec name"
            ) from None
        ends, bad = _check(path, name)
        if bad is not None:
            raise ValueError(
                f"{path}: {bad} is not {name}: pass --encoding cp1252 (or latin-1) for files exported by "
                "Windows spreadsheets, or leave --encoding out to detect it"
            )
        # latin-1 reads any byte, so a UTF-8 file read with it "works" and its accents turn into
        # mojibake ('é' → 'Ã©'): unknown categories and zones, part of the file imported. Refuse it.
        mark = _utf8_mark(path) if _single_byte(name) else None
        if mark is not None:
            line, char = mark
            misread = char.encode("utf-8").decode(name, errors="replace")
            raise ValueError(
                f"{path}: the file is UTF-8 (line {line} has {char!r}), which --encoding {encoding} would "
                f"read as {misread!r}: leave --encoding out (or pass utf-8); nothing imported"
            )
        return TextFormat("utf-8-sig" if name == "utf-8" else name, ends)
    ends, bad = _check(path, "utf-8")
    if bad is None:
        return TextFormat("utf-8-sig", ends)
    for fallback in ("cp1252", "latin-1"):  # latin-1 reads any byte: the last resort
        ends, other = _check(path, fallback)
        if other is None:
            warning = (
                f"{path.name} is not UTF-8 ({bad}): read as {fallback} (Windows Latin-1, as French "
                "office spreadsheets export); if accents look wrong, pass --encoding"
            )
            return TextFormat(fallback, ends, warning)
    raise AssertionError("latin-1 decodes every byte")  # pragma: no cover


def open_text(path: Path, fmt: TextFormat) -> io.TextIOWrapper:
    """The file as text in its encoding, for :mod:`csv` (``newline=""``)."""
    return io.TextIOWrapper(open_binary(path), encoding=fmt.encoding, newline="")


def choose_delimiter(first_line: str, wanted: Iterable[str], width: int | None = None) -> str:
    """The delimiter that splits the header into the wanted columns (or a header-less row into ``width``).

    Falls back to the one that splits the line into the most fields, then ``,``.
    """
    import csv

    wanted = set(wanted)

    def fields(d: str) -> list[str]:
        return next(csv.reader([first_line], delimiter=d), [])

    for d in DELIMITERS:
        split = fields(d)
        if (width is not None and len(split) == width) or (width is None and wanted and wanted <= set(split)):
            return d
    best = max(DELIMITERS, key=lambda d: len(fields(d)))
    return best if len(fields(best)) > 1 else ","
