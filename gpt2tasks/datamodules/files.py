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
    """Rows of a data file as dicts; every problem is a UserError naming `key` and the fix."""
    p = Path(path).expanduser()
    if not p.exists():
        raise UserError(f"{key}={path}: file not found (relative paths start at {os.getcwd()}). "
                        f"Fix: check the path given to {key}.")
    if p.is_dir():
        raise UserError(f"{key}={path} is a directory. Fix: point {key} at a file ({', '.join(SUPPORTED)}).")
    suffix = p.suffix.lower()
    if suffix not in SUPPORTED:
        raise UserError(f"{key}={path}: unsupported file type {suffix!r}. Fix: use one of "
                        f"{', '.join(SUPPORTED)}.")
    try:
        text = p.read_text(encoding="utf-8-sig")  # -sig: tolerate a BOM written by spreadsheet tools
    except UnicodeDecodeError as exc:
        raise UserError(f"{key}={path}: not UTF-8 text (byte {exc.start}). Fix: re-save the file as UTF-8.") from None
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
    # GLUE TSVs contain unbalanced quotes: TSV fields are never quoted.
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quoting=quoting, strict=True)
    header: list[str] | None = list(column_names) if column_names else None
    rows: list[dict] = []
    start_line = 1
    try:
        for fields in reader:
            line = start_line  # the line where this record began (quoted fields may span lines)
            start_line = reader.line_num + 1
            if not fields or all(not f.strip() for f in fields):
                continue
            if header is None:
                header = [f.strip() for f in fields]
                continue
            if len(fields) != len(header):
                raise UserError(
                    f"{key}={path}, line {line}: expected {len(header)} fields ({delimiter!r}-separated, "
                    f"columns {header}) but found {len(fields)}. Fix: quote fields that contain the "
                    f"delimiter{' (CSV)' if delimiter == ',' else ''}, or check that the file really is "
                    f"{'tab' if delimiter == chr(9) else 'comma'}-separated.")
            rows.append({name: value.strip() for name, value in zip(header, fields)})
    except csv.Error as exc:
        raise UserError(f"{key}={path}, line {reader.line_num}: malformed {'TSV' if delimiter == chr(9) else 'CSV'} "
                        f"({exc}). Fix: check the quoting on that line.") from None
    return rows


def _read_json(text: str, path, key: str) -> list[dict]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return _read_jsonl(text, path, key)  # a .json file that is really JSON lines
    if isinstance(data, dict):
        if not isinstance(data.get("data"), list):
            return _read_jsonl(text, path, key)  # a one-line JSON-lines file is a single object
        data = data["data"]
    if not isinstance(data, list):
        raise UserError(f"{key}={path}: expected a JSON list of objects (or {{\"data\": [...]}}). "
                        "Fix: write one object per example, or use JSON lines (.jsonl).")
    for i, item in enumerate(data):
        if not isinstance(item, dict):
            raise UserError(f"{key}={path}: item {i} is {type(item).__name__}, not an object. "
                            "Fix: every example must be a JSON object with named fields.")
    return data


def _read_jsonl(text: str, path, key: str) -> list[dict]:
    rows: list[dict] = []
    for number, line in enumerate(text.splitlines(), start=1):
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
    """One error listing every configured column the data lacks, and the columns it has."""
    found = list(records[0].keys()) if records else []
    missing = {k: c for k, c in columns.items() if c not in records[0]} if records else dict(columns)
    if not missing:
        for i, row in enumerate(records):  # JSON rows can differ; CSV rows all share the header
            absent = [c for c in columns.values() if c not in row]
            if absent:
                raise UserError(f"{key}={path}: row {i} has no {absent} field. Fix: give every row the "
                                "same fields.")
        return
    asked = ", ".join(f"{k}={c!r}" for k, c in missing.items())
    first_key = next(iter(missing))
    raise UserError(f"{key}={path} has no column for {asked}. Columns found: {', '.join(found) or '(none)'}. "
                    f"Fix: set {first_key}=<one of the found columns>"
                    f"{' (and likewise the others)' if len(missing) > 1 else ''}.")
