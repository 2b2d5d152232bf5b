"""Reading a hand-made text file (a captions CSV/JSONL, a split file) as the UTF-8 it must be,
with a message naming the file, the line and the fix when it is not: a spreadsheet's
"Unicode text" export is UTF-16, and two files concatenated leave a byte-order mark inside
the text, where it would become part of a file name or a caption without a word."""

from __future__ import annotations

import codecs

_UTF16_32 = (codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
# Signed 64-bit: image ids travel as torch int64 tensors and JSON numbers.
ID_MIN, ID_MAX = -(2**63), 2**63 - 1


def read_utf8(path: str, what: str) -> str:
    """The text of `path` (`what`: "captions file", ...), a UTF-8 byte-order mark at its start
    removed; a ValueError naming the file, the line and the fix for any other encoding."""
    with open(path, "rb") as f:
        raw = f.read()
    fix = f"save the {what} as UTF-8 (in a spreadsheet: CSV UTF-8; or iconv -f UTF-16 -t UTF-8 old > new)"
    if raw.startswith(_UTF16_32) or b"\x00" in raw:
        why = "starts with a UTF-16 or UTF-32 byte-order mark" if raw.startswith(_UTF16_32) else "holds NUL bytes"
        line = raw.count(b"\n", 0, max(raw.find(b"\x00"), 0)) + 1
        raise ValueError(f"{path}: the {what} {why} (line {line}), so it is UTF-16/UTF-32 or binary, not UTF-8 text; {fix}.")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise ValueError(f"{path}: line {line} is not UTF-8 (byte {raw[e.start]:#04x} at offset {e.start}: a Latin-1 or "
                         f"Windows export?); {fix}.") from None
    mark = text.find("\ufeff")
    if mark >= 0:
        line = text.count("\n", 0, mark) + 1
        raise ValueError(f"{path}: line {line} holds a byte-order mark (U+FEFF) inside the text, as files joined "
                         f"together leave; it would become part of a file name or caption. Remove it (e.g. "
                         f"sed -i 's/\\xEF\\xBB\\xBF//g' {path}).")
    return text


def check_image_id(image_id: int, where: str, fix: str) -> int:
    """`image_id` if it fits in a signed 64-bit integer, else a ValueError naming `where`."""
    if not ID_MIN <= image_id <= ID_MAX:
        raise ValueError(f"{where} has image_id {image_id}, which does not fit in 64 bits (ids are kept as signed 64-bit "
                         f"integers, up to {ID_MAX}); {fix}")
    return image_id
