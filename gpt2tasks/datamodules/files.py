"""Strict readers for the user's data files: CSV, TSV, JSON, JSONL.

Strict on purpose: a malformed row is reported with its file, config key and line number instead
of being skipped or mis-parsed, because a silently shifted column trains a wrong model.

CSV, TSV and JSON lines are read one row at a time (`iter_records`): `predict` streams a file of
any length through them in constant memory, and training reads the same rows as a list
(`read_records`). A JSON document (.json) is parsed whole: it is one value.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

from gpt2tasks.errors import UserError

SUPPORTED = (".csv", ".tsv", ".json", ".jsonl", ".ndjson")
CHUNK = 1 << 20  # 1 MiB reads: the hash keeps up with the disk, memory stays flat for any file size


def content_digest(path: str | os.PathLike) -> str:
    """A hash of the file's bytes (BLAKE2b, 128-bit hex): what a data file *is*, whatever its path,
    size or mtime say. The tokenization cache is keyed by it (an edit that keeps the size and the
    mtime, as `cp -p` or `rsync -a` do, still changes the key), and a run records it per data file
    so that `resume=true` refuses a file edited since the run started. One function for both, so the
    two can never disagree about whether a file changed."""
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def read_records(path: str | os.PathLike, key: str, column_names: Sequence[str] | None = None,
                 with_lines: bool = False):
    """Rows of a data file as dicts; every problem is a UserError naming `key` and the fix.

    `column_names` is for headerless CSV/TSV files (the first row is then data); JSON ignores it.
    With `with_lines`, returns (rows, the line each row starts on), lines None for a JSON document.
    """
    pairs = list(iter_records(path, key, column_names))
    if not pairs:
        raise UserError(f"{key}={path}: the file has no data rows, so this split is empty. "
                        "Fix: point it at a file with examples.")
    rows = [row for row, _ in pairs]
    lines = None if pairs[0][1] is None else [line for _, line in pairs]
    return (rows, lines) if with_lines else rows


def iter_records(path: str | os.PathLike, key: str, column_names: Sequence[str] | None = None
                 ) -> Iterator[tuple[dict, int | None]]:
    """(row, the line it starts on) of a data file, one at a time, as `read_records` reads them:
    CSV/TSV/JSONL streamed from the file (memory does not grow with its length), a JSON document
    parsed whole (lines None). Problems are raised when the reader reaches them."""
    p, suffix = check_file(path, key, SUPPORTED)
    if suffix in (".csv", ".tsv"):
        yield from _read_delimited(iter_lines(p, key, newline=""), "\t" if suffix == ".tsv" else ",", path, key,
                                   column_names)
    elif suffix == ".json":
        text, _ = read_text(path, key, SUPPORTED)
        yield from ((row, None) for row in _read_json(text, path, key))
    else:
        yield from _read_jsonl(iter_lines(p, key, newline="\n"), path, key)


def iter_lines(path: Path, key: str, newline: str | None) -> Iterator[str]:
    """The lines of a UTF-8 text file (a BOM dropped), read as they are consumed. `newline` as
    open()'s: "" for the csv module (which handles line ends itself, also inside quoted fields);
    "\n" to split on \n alone, as str.split("\n") does (JSON strings may hold U+2028, \r ...)."""
    number = 0
    try:
        with open(path, encoding="utf-8-sig", newline=newline) as f:  # -sig: a BOM from spreadsheet tools
            for number, line in enumerate(f, start=1):  # number: for the error below
                yield line
    except UnicodeDecodeError:
        raise UserError(f"{key}={path}: not UTF-8 text (after line {number}). "
                        "Fix: re-save the file as UTF-8.") from None
    except OSError as exc:
        raise UserError(f"{key}={path}: cannot be read ({exc.strerror}). Fix: check its permissions.") from None


def read_text(path: str | os.PathLike, key: str, supported: Sequence[str] | None = None) -> tuple[str, str]:
    """(the file's text, its lower-case suffix); a missing, unreadable or non-UTF-8 file is a UserError.
    `supported`: the suffixes accepted (None: any)."""
    p, suffix = check_file(path, key, supported)
    try:
        text = p.read_text(encoding="utf-8-sig")  # -sig: tolerate a BOM written by spreadsheet tools
    except UnicodeDecodeError as exc:
        raise UserError(f"{key}={path}: not UTF-8 text (byte {exc.start}). "
                        "Fix: re-save the file as UTF-8.") from None
    except OSError as exc:
        raise UserError(f"{key}={path}: cannot be read ({exc.strerror}). Fix: check its permissions.") from None
    return text, suffix


def check_file(path: str | os.PathLike, key: str, supported: Sequence[str] | None = None) -> tuple[Path, str]:
    """(the file, its lower-case suffix) once it exists, is a file and has a `supported` suffix
    (None: any); otherwise a UserError naming `key`."""
    p = Path(path).expanduser()
    if not p.exists():
        # Hydra may change the working directory, so say which one relative paths started from.
        raise UserError(f"{key}={path}: file not found (cwd is {os.getcwd()}). "
                        f"Fix: check the path given to {key}, or pass an absolute path.")
    if p.is_dir():
        raise UserError(f"{key}={path} is a directory. Fix: point {key} at a file ({', '.join(SUPPORTED)}).")
    suffix = p.suffix.lower()
    if supported is not None and suffix not in supported:
        raise UserError(f"{key}={path}: unsupported file type {suffix!r}. Fix: convert it to one of "
                        f"{', '.join(supported)}.")
    return p, suffix


def _read_delimited(lines: Iterable[str], delimiter: str, path, key: str, column_names: Sequence[str] | None
                    ) -> Iterator[tuple[dict, int]]:
    tsv = delimiter == "\t"
    kind = "TSV" if tsv else "CSV"
    # GLUE TSVs contain unbalanced quotes, so TSV fields are never quoted. strict=True turns CSV
    # quoting mistakes into errors instead of fields glued together.
    quoting = csv.QUOTE_NONE if tsv else csv.QUOTE_MINIMAL
    reader = csv.reader(lines, delimiter=delimiter, quoting=quoting, strict=True)
    header: list[str] | None = list(column_names) if column_names else None
    line = 1  # where the current record starts: a quoted CSV field may span several lines
    try:
        for fields in reader:
            start, line = line, reader.line_num + 1
            if not any(f.strip() for f in fields):
                continue
            if header is None:
                header = [f.strip() for f in fields]
                _check_header(header, path, key, kind)
                continue
            if len(fields) != len(header):
                hint = ("quote fields that contain a comma, or check that the file really is comma-separated"
                        if not tsv else "remove tabs inside fields, or check that the file really is tab-separated")
                if column_names:
                    hint += ", or fix data.column_names"
                raise UserError(f"{key}={path}, line {start}: expected {len(header)} fields ({kind} columns "
                                f"{header}) but found {len(fields)}. Fix: {hint}.")
            yield dict(zip(header, map(str.strip, fields))), start
    except csv.Error as exc:
        raise UserError(f"{key}={path}, line {line}: malformed {kind} ({exc}). "
                        "Fix: check the quoting of the row starting on that line.") from None


def _check_header(header: list[str], path, key: str, kind: str) -> None:
    # Duplicate names would silently keep only the last column of that name.
    duplicates = sorted({name for name in header if header.count(name) > 1})
    if duplicates:
        raise UserError(f"{key}={path}: the {kind} header repeats column(s) {duplicates}. Fix: give every "
                        "column a unique name, or, if the file has no header row, set data.column_names.")


def _read_json(text: str, path, key: str) -> list[dict]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        if _first_line_is_json(text):
            return [row for row, _ in _read_jsonl(text.split("\n"), path, key)]  # a .json file that is really JSON lines
        raise UserError(f"{key}={path}, line {exc.lineno}: invalid JSON ({exc.msg} at column {exc.colno}). "
                        "Fix: correct the file, or write one JSON object per line (.jsonl).") from None
    if isinstance(data, dict):
        # {"data": [...]} is the common wrapper; any other object is one record, as in JSON lines.
        data = data["data"] if isinstance(data.get("data"), list) else [data]
    if not isinstance(data, list):
        raise UserError(f"{key}={path}: expected a JSON list of objects (or {{\"data\": [...]}}), found a value of "
                        f"type {type(data).__name__}. Fix: write one object per example, or use JSON lines (.jsonl).")
    for i, item in enumerate(data):
        if not isinstance(item, dict):
            raise UserError(f"{key}={path}: item {i} (counting from 0) is a {type(item).__name__}, not an "
                            "object. Fix: every example must be a JSON object with named fields.")
    return data


def _first_line_is_json(text: str) -> bool:
    first = next((line for line in text.split("\n") if line.strip()), "")
    try:
        json.loads(first)
    except json.JSONDecodeError:
        return False
    return True


def _read_jsonl(lines: Iterable[str], path, key: str) -> Iterator[tuple[dict, int]]:
    # Lines split on \n alone, not splitlines(): JSON strings may hold raw U+2028 etc., which splitlines breaks on.
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"{key}={path}, line {number}: invalid JSON ({exc.msg} at column {exc.colno}). "
                            "Fix: each line must be one complete JSON object.") from None
        if not isinstance(item, dict):
            raise UserError(f"{key}={path}, line {number}: a {type(item).__name__}, not a JSON object. "
                            "Fix: each line must be one JSON object with named fields.")
        yield item, number


def require_columns(records: list[dict], columns: Mapping[str, str], path: str, key: str, first: int = 0) -> None:
    """One error listing every configured column the data lacks, and the columns it has.

    `columns` maps config key -> column name, e.g. {"data.text_column": "sentence"}; `first`: the
    file's row number of records[0] (a chunk of a streamed file).
    """
    found = list(records[0]) if records else []
    missing = {k: c for k, c in columns.items() if c not in found}
    if missing:
        asked = ", ".join(f"{k}={c!r}" for k, c in missing.items())
        fix = " and ".join(f"{k}=<one of the found columns>" for k in missing)
        headerless = str(path).lower().endswith((".csv", ".tsv"))
        raise UserError(f"{key}={path} has no column for {asked}. Columns found: {', '.join(found) or '(none)'}. "
                        f"Fix: set {fix}"
                        f"{', or, if the file has no header row, set data.column_names' if headerless else ''}.")
    # CSV rows all share the header, but JSON records can each have different fields.
    wanted = list(columns.items())
    for i, row in enumerate(records):
        absent = [f"{k}={c!r}" for k, c in wanted if c not in row]
        if absent:
            raise UserError(f"{key}={path}: row {first + i} (counting from 0) has no field for {', '.join(absent)}, "
                            f"though the first row has it. Fix: give every row the same fields.")


CONLL_SUFFIXES = ("", ".conll", ".conllu", ".iob", ".bio", ".txt", ".train", ".testa", ".testb", ".dev", ".test")


def read_conll(path: str | os.PathLike, key: str, tokens_column: str, tags_column: str,
               tag_index: int = -1) -> tuple[list[dict], list[int]]:
    """CoNLL column files: one word per line with whitespace-separated columns, a blank line ends a
    sentence, `-DOCSTART-` lines separate documents and are skipped. The word is column 0, the tag
    column `tag_index` (default: the last, as in CoNLL-2003's `word POS chunk NER`).

    Returns rows {tokens_column: [...], tags_column: [...]} and the line each sentence starts on.
    """
    text, _ = read_text(path, key)
    rows: list[dict] = []
    lines: list[int] = []
    words: list[str] = []
    tags: list[str] = []
    for number, line in enumerate(text.split("\n") + [""], start=1):
        fields = line.split()
        if not fields or fields[0] == "-DOCSTART-":
            if words:
                rows.append({tokens_column: words, tags_column: tags})
                words, tags = [], []
            continue
        if len(fields) < 2:
            raise UserError(f"{key}={path}, line {number}: expected a word and a tag (whitespace-separated "
                            f"columns), found {line.strip()!r}. Fix: write one 'word ... TAG' per line and a "
                            "blank line between sentences, or use JSON lines with tokens/tags lists.")
        try:
            tag = fields[tag_index]
        except IndexError:
            raise UserError(f"{key}={path}, line {number}: data.conll_tag_column={tag_index} but the line has "
                            f"only {len(fields)} columns. Fix: pick a column that every line has "
                            "(-1 = the last).") from None
        if not words:
            lines.append(number)
        words.append(fields[0])
        tags.append(tag)
    if not rows:
        raise UserError(f"{key}={path}: no sentences found, so this split is empty. Fix: point it at a "
                        "CoNLL file (one 'word ... TAG' per line, blank line between sentences).")
    return rows, lines
