"""Strict readers for the user's data files: CSV, TSV, JSON, JSONL.

Strict on purpose: a malformed row is reported with its file, config key and line number instead
of being skipped or mis-parsed, because a silently shifted column trains a wrong model.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from gpt2tasks.errors import UserError

SUPPORTED = (".csv", ".tsv", ".json", ".jsonl", ".ndjson")


def read_records(path: str | os.PathLike, key: str, column_names: Sequence[str] | None = None) -> list[dict]:
    """Rows of a data file as dicts; every problem is a UserError naming `key` and the fix.

    `column_names` is for headerless CSV/TSV files (the first row is then data); JSON ignores it.
    """
    p = Path(path).expanduser()
    if not p.exists():
        # Hydra may change the working directory, so say which one relative paths started from.
        raise UserError(f"{key}={path}: file not found (cwd is {os.getcwd()}). "
                        f"Fix: check the path given to {key}, or pass an absolute path.")
    if p.is_dir():
        raise UserError(f"{key}={path} is a directory. Fix: point {key} at a file ({', '.join(SUPPORTED)}).")
    suffix = p.suffix.lower()
    if suffix not in SUPPORTED:
        raise UserError(f"{key}={path}: unsupported file type {suffix!r}. Fix: convert it to one of "
                        f"{', '.join(SUPPORTED)}.")
    try:
        text = p.read_text(encoding="utf-8-sig")  # -sig: tolerate a BOM written by spreadsheet tools
    except UnicodeDecodeError as exc:
        raise UserError(f"{key}={path}: not UTF-8 text (byte {exc.start}). "
                        "Fix: re-save the file as UTF-8.") from None
    except OSError as exc:
        raise UserError(f"{key}={path}: cannot be read ({exc.strerror}). Fix: check its permissions.") from None
    if suffix in (".csv", ".tsv"):
        rows = _read_delimited(text, "\t" if suffix == ".tsv" else ",", path, key, column_names)
    elif suffix == ".json":
        rows = _read_json(text, path, key)
    else:
        rows = _read_jsonl(text, path, key)
    if not rows:
        raise UserError(f"{key}={path}: the file has no data rows, so this split is empty. "
                        "Fix: point it at a file with examples.")
    return rows


def _read_delimited(text: str, delimiter: str, path, key: str, column_names: Sequence[str] | None) -> list[dict]:
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


def _read_jsonl(text: str, path, key: str) -> list[dict]:
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
