"""Strict readers for the user's data files: CSV, TSV, JSON, JSONL.

Strict on purpose: a malformed row is reported with its file, config key and line number instead
of being skipped or mis-parsed, because a silently shifted column trains a wrong model.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from collections.abc import Mapping, Sequence
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
    text, suffix = read_text(path, key, SUPPORTED)
    lines: list[int] | None = []
    if suffix in (".csv", ".tsv"):
        rows = _read_delimited(text, "\t" if suffix == ".tsv" else ",", path, key, column_names, lines)
    elif suffix == ".json":
        rows, lines = _read_json(text, path, key), None
    else:
        rows = _read_jsonl(text, path, key, lines)
    if not rows:
        raise UserError(f"{key}={path}: the file has no data rows, so this split is empty. "
                        "Fix: point it at a file with examples.")
    return (rows, lines) if with_lines else rows


def read_text(path: str | os.PathLike, key: str, supported: Sequence[str] | None = None) -> tuple[str, str]:
    """(the file's text, its lower-case suffix); a missing, unreadable or non-UTF-8 file is a UserError.
    `supported`: the suffixes accepted (None: any)."""
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
    try:
        text = p.read_text(encoding="utf-8-sig")  # -sig: tolerate a BOM written by spreadsheet tools
    except UnicodeDecodeError as exc:
        raise UserError(f"{key}={path}: not UTF-8 text (byte {exc.start}). "
                        "Fix: re-save the file as UTF-8.") from None
    except OSError as exc:
        raise UserError(f"{key}={path}: cannot be read ({exc.strerror}). Fix: check its permissions.") from None
    return text, suffix


def _read_delimited(text: str, delimiter: str, path, key: str, column_names: Sequence[str] | None,
                    lines: list[int]) -> list[dict]:
    tsv = delimiter == "\t"
    kind = "TSV" if tsv else "CSV"
    # GLUE TSVs contain unbalanced quotes, so TSV fields are never quoted. strict=True turns CSV
    # quoting mistakes into errors instead of fields glued together.
    quoting = csv.QUOTE_NONE if tsv else csv.QUOTE_MINIMAL
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quoting=quoting, strict=True)
    header: list[str] | None = list(column_names) if column_names else None
    rows: list[dict] = []
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
            rows.append(dict(zip(header, map(str.strip, fields))))
            lines.append(start)
    except csv.Error as exc:
        raise UserError(f"{key}={path}, line {line}: malformed {kind} ({exc}). "
                        "Fix: check the quoting of the row starting on that line.") from None
    return rows


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
            return _read_jsonl(text, path, key)  # a .json file that is really JSON lines
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


def _read_jsonl(text: str, path, key: str, lines: list[int] | None = None) -> list[dict]:
    rows: list[dict] = []
    # split("\n"), not splitlines(): JSON strings may hold raw U+2028 etc., which splitlines breaks on.
    for number, line in enumerate(text.split("\n"), start=1):
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
        rows.append(item)
        if lines is not None:
            lines.append(number)
    return rows


def require_columns(records: list[dict], columns: Mapping[str, str], path: str, key: str) -> None:
    """One error listing every configured column the data lacks, and the columns it has.

    `columns` maps config key -> column name, e.g. {"data.text_column": "sentence"}.
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
            raise UserError(f"{key}={path}: row {i} (counting from 0) has no field for {', '.join(absent)}, "
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
