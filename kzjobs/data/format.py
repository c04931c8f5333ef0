"""Read and write the Kaggle Kuzushiji Recognition formats, strictly.

- ``train.csv``: ``image_id,labels``; labels are ``U+XXXX x y w h`` groups (x, y top-left).
- ``unicode_translation.csv``: ``Unicode,char``.
- submissions: ``image_id,labels``; labels are ``U+XXXX x y`` centre points.

An empty labels field is a page with no characters. Every parse error names the
image id and the token position, so a bad row can be quarantined with its reason.
The stdlib ``csv`` module is used (not pandas) so that this module stays light.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

MAX_PREDICTIONS_PER_PAGE = 1200
SEG_FP = "seg_fp"  # a detected box that is not a character
UNKNOWN = "unk"  # a detected box on an unlabelled page, class not yet known
BOX_CODES = (SEG_FP, UNKNOWN)  # extra codes allowed in detector box files
_CODE = re.compile(r"^U\+[0-9A-F]{4,6}$")


class FormatError(ValueError):
    """The input is not in the expected format; the message says where."""

    def __init__(self, message: str, *, image_id: str | None = None, position: int | None = None):
        where = []
        if image_id is not None:
            where.append(f"image {image_id!r}")
        if position is not None:
            where.append(f"token {position}")
        super().__init__(f"{', '.join(where)}: {message}" if where else message)
        self.image_id = image_id
        self.position = position
        self.reason = message


@dataclass(frozen=True, slots=True)
class Box:
    """A labelled character box; ``code`` is ``U+XXXX`` (or ``seg_fp`` for detector OOF)."""

    code: str
    x: int
    y: int
    w: int
    h: int

    @property
    def center(self) -> tuple[float, float]:
        return self.x + self.w / 2, self.y + self.h / 2

    @property
    def xyxy(self) -> tuple[int, int, int, int]:
        return self.x, self.y, self.x + self.w, self.y + self.h


@dataclass(frozen=True, slots=True)
class Point:
    """A predicted character: its code point and centre."""

    code: str
    x: float
    y: float


def is_code_point(token: str) -> bool:
    return bool(_CODE.match(token))


def code_to_char(code: str) -> str:
    return chr(int(code[2:], 16))


def char_to_code(char: str) -> str:
    return f"U+{ord(char):04X}"


def _check_code(token: str, image_id: str, pos: int, allow: frozenset[str]) -> str:
    if token in allow or is_code_point(token):
        return token
    raise FormatError(
        f"expected a code point like U+304B, got {token!r}", image_id=image_id, position=pos
    )


def _int(token: str, image_id: str, pos: int, what: str) -> int:
    try:
        return int(token)
    except ValueError:
        try:
            value = float(token)
        except ValueError:
            raise FormatError(
                f"{what} is not a number: {token!r}", image_id=image_id, position=pos
            ) from None
        if not value.is_integer():
            raise FormatError(
                f"{what} is not an integer: {token!r}", image_id=image_id, position=pos
            ) from None
        return int(value)


def parse_labels(image_id: str, text: str | None, *, allow: Iterable[str] = ()) -> list[Box]:
    """Parse ``U+XXXX x y w h`` groups. Sizes must be positive."""
    tokens = (text or "").split()
    allow_set = frozenset(allow)
    if len(tokens) % 5:
        raise FormatError(
            f"{len(tokens)} tokens is not a multiple of 5 (U+XXXX x y w h)", image_id=image_id
        )
    boxes = []
    for i in range(0, len(tokens), 5):
        code = _check_code(tokens[i], image_id, i, allow_set)
        x, y, w, h = (
            _int(tokens[i + j], image_id, i + j, n)
            for j, n in ((1, "x"), (2, "y"), (3, "w"), (4, "h"))
        )
        if w <= 0 or h <= 0:
            raise FormatError(
                f"box size must be positive, got w={w} h={h}", image_id=image_id, position=i
            )
        boxes.append(Box(code, x, y, w, h))
    return boxes


def parse_points(image_id: str, text: str | None) -> list[Point]:
    """Parse ``U+XXXX x y`` groups of a submission."""
    tokens = (text or "").split()
    if len(tokens) % 3:
        raise FormatError(
            f"{len(tokens)} tokens is not a multiple of 3 (U+XXXX x y)", image_id=image_id
        )
    points = []
    for i in range(0, len(tokens), 3):
        code = _check_code(tokens[i], image_id, i, frozenset())
        coords = []
        for j, name in ((1, "x"), (2, "y")):
            try:
                coords.append(float(tokens[i + j]))
            except ValueError:
                raise FormatError(
                    f"{name} is not a number: {tokens[i + j]!r}", image_id=image_id, position=i + j
                ) from None
        points.append(Point(code, coords[0], coords[1]))
    return points


def format_labels(boxes: Iterable[Box]) -> str:
    return " ".join(f"{b.code} {b.x} {b.y} {b.w} {b.h}" for b in boxes)


def format_points(points: Iterable[Point]) -> str:
    return " ".join(f"{p.code} {round(p.x)} {round(p.y)}" for p in points)


def read_rows(data: bytes | str, columns: tuple[str, ...]) -> list[tuple[str, ...]]:
    """Rows of a CSV whose header must be exactly ``columns`` (the whole input fails else)."""
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise FormatError(f"not UTF-8 text: {exc}") from None
    reader = csv.reader(io.StringIO(data, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise FormatError("empty CSV: no header") from None
    except csv.Error as exc:
        raise FormatError(f"unreadable CSV header: {exc}") from None
    if tuple(h.strip() for h in header) != columns:
        raise FormatError(f"expected columns {list(columns)}, got {header}")
    rows = []
    try:
        for line_no, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != len(columns):
                raise FormatError(f"line {line_no}: expected {len(columns)} fields, got {len(row)}")
            rows.append(tuple(row))
    except csv.Error as exc:
        raise FormatError(f"malformed CSV: {exc}") from None
    return rows


def write_rows(columns: tuple[str, ...], rows: Iterable[Iterable[str]]) -> bytes:
    buf = io.StringIO(newline="")
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(rows)
    return buf.getvalue().encode("utf-8")


LABEL_COLUMNS = ("image_id", "labels")
TRANSLATION_COLUMNS = ("Unicode", "char")


def read_annotations(data: bytes | str, *, allow: Iterable[str] = ()) -> dict[str, list[Box]]:
    """``train.csv`` as ``{image_id: [Box, ...]}`` in file order; raises on the first error."""
    out: dict[str, list[Box]] = {}
    for image_id, labels in read_rows(data, LABEL_COLUMNS):
        if image_id in out:
            raise FormatError("duplicate image_id", image_id=image_id)
        out[image_id] = parse_labels(image_id, labels, allow=allow)
    return out


def write_annotations(pages: Mapping[str, Iterable[Box]]) -> bytes:
    return write_rows(LABEL_COLUMNS, ((i, format_labels(b)) for i, b in pages.items()))


def read_submission(data: bytes | str) -> dict[str, list[Point]]:
    out: dict[str, list[Point]] = {}
    for image_id, labels in read_rows(data, LABEL_COLUMNS):
        if image_id in out:
            raise FormatError("duplicate image_id", image_id=image_id)
        points = parse_points(image_id, labels)
        if len(points) > MAX_PREDICTIONS_PER_PAGE:
            raise FormatError(
                f"{len(points)} predictions, more than {MAX_PREDICTIONS_PER_PAGE} per page",
                image_id=image_id,
            )
        out[image_id] = points
    return out


def write_submission(
    pages: Mapping[str, Iterable[Point]] | Iterable[tuple[str, Iterable[Point]]],
) -> bytes:
    """``submission.csv`` from ``{image_id: points}`` or a stream of (image_id, points)."""
    rows = []
    for image_id, points in pages.items() if isinstance(pages, Mapping) else pages:
        points = list(points)
        if len(points) > MAX_PREDICTIONS_PER_PAGE:
            raise FormatError(
                f"{len(points)} predictions, more than {MAX_PREDICTIONS_PER_PAGE} per page",
                image_id=image_id,
            )
        rows.append((image_id, format_points(points)))
    return write_rows(LABEL_COLUMNS, rows)


def read_translation(data: bytes | str) -> dict[str, str]:
    """``unicode_translation.csv`` as ``{"U+304B": "か"}``."""
    out: dict[str, str] = {}
    for code, char in read_rows(data, TRANSLATION_COLUMNS):
        if not is_code_point(code):
            raise FormatError(f"bad code point {code!r} in unicode_translation.csv")
        out[code] = char
    return out


def write_translation(vocab: Mapping[str, str]) -> bytes:
    return write_rows(TRANSLATION_COLUMNS, sorted(vocab.items()))


def boxes_to_points(pages: Mapping[str, Iterable[Box]]) -> dict[str, list[Point]]:
    """A submission made of the boxes' centres (scores F1 = 1 against the same boxes)."""
    return {i: [Point(b.code, *b.center) for b in boxes] for i, boxes in pages.items()}
