"""One LightningDataModule for every task kind: load splits, tokenize (cached), batch.

What differs between kinds is only `iter_file` (for formats beyond CSV/TSV/JSON/JSONL),
`required_columns`, `fit_label_space`, `encode_rows` (labels, in Python, so label errors surface
before tokenizing) and `tokenize_batch` (run by `datasets.map`, cached on disk; it may turn one
example into several rows, e.g. windows of a long text). Everything else -- files or Hub, splits,
caching, length-grouped DDP-aware batches, dynamic right padding -- lives here once.

Each tokenized row keeps `idx`, its row number in its split: evaluation gathers predictions by
idx, so metrics never depend on batch order, padding of the last batch, or the number of devices.
Kinds that cut an example into windows also keep `example`, the example's row number, to put the
windows back together; the raw rows stay in `self.examples[split]` for metrics that need the
original text (QA answers).

`predict` reads an input file through the same readers and tokenization, without labels
(`predict_chunks`): the kinds' `encode_rows`/`tokenize_batch` leave the label columns out when
`part.labelled` is false, so an input file never needs (fake) labels. It reads the file a chunk of
rows at a time (streamed where the format allows, see `iter_file`) and tokenizes in memory, not
through the on-disk cache: memory stays flat in the file's length, and an input seen once does
not fill the cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import lightning as L
from filelock import FileLock
from torch.utils.data import DataLoader, Dataset

from gpt2tasks import compat
from gpt2tasks.datamodules.batching import BatchSource, Collator, LengthGroupedSampler, longest_sequence
from gpt2tasks.datamodules.files import content_digest, iter_records, require_columns
from gpt2tasks.datamodules.labels import LabelSpace
from gpt2tasks.datamodules.packing import PackedCollator, PackedSampler, default_layout
from gpt2tasks.errors import UserError
from gpt2tasks.resources import default_cache_dir

log = logging.getLogger(__name__)

TRAIN, VAL, TEST, PREDICT = "train", "val", "test", "predict"
CACHE_VERSION = 2  # bump when tokenization output changes, to invalidate old caches

# The data keys that are the run's choice, not a task's: how batches are formed and loaded, and how
# much of each split a quick run reads. A task preset (conf/task/) never sets them (a recipe,
# conf/recipe/, may), and in a multi-task run the run's value goes to every task
# (multitask.expand). Every other DataSpec field belongs to the task: its files, columns, lengths.
RUN_DATA_KEYS = ("batch_size", "eval_batch_size", "pack_examples", "group_by_length", "max_tokens_per_row",
                 "pad_to_multiple_of", "num_workers", "cache_dir", "max_train_samples", "max_eval_samples",
                 "sample_strategy", "sample_seed")


@dataclass(frozen=True)
class DataSpec:
    """What `data.*` in the config says. Every key of conf/config.yaml's `data:` block is a field."""

    train_file: str | None = None
    validation_file: str | None = None
    test_file: str | None = None
    # extra validation sets, e.g. MNLI {mismatched: {split: validation_mismatched, file: null}};
    # logged as val_<name>/<metric>
    extra_validation: dict[str, dict[str, Any]] = field(default_factory=dict)
    hub_path: str | None = None  # datasets.load_dataset(hub_path, hub_name) when no files are given
    hub_name: str | None = None
    train_split: str | None = "train"
    validation_split: str | None = "validation"
    test_split: str | None = None
    validation_fraction: float | None = None  # hold out part of train when there is no validation set
    # rows with the same value here stay on one side of that hold-out (e.g. SQuAD's `title`: no article
    # of the validation set in training); null: each row alone (QA: each context, see qa.py)
    validation_group_column: str | None = None
    column_names: list[str] | None = None  # for headerless CSV/TSV files
    text_column: str = "text"
    text_pair_column: str | None = None
    label_column: str = "label"
    allow_rare_labels: bool = False  # train with classes of a handful of rows (refused by default: typos)
    pair_separator: str = "<|endoftext|>"  # between a pair's texts, and between QA question and context
    # token classification
    tokens_column: str = "tokens"
    tags_column: str = "ner_tags"
    conll_tag_column: int = -1  # which column of a CoNLL file holds the tag (-1: the last)
    label_all_tokens: bool = False  # label every sub-token (B-X -> I-X after the first), not only the first
    # question answering
    id_column: str = "id"
    question_column: str = "question"
    context_column: str | list[str] = "context"  # multiple choice: a list of columns is joined with spaces
    answers_column: str = "answers"
    doc_stride: int = 64  # tokens shared by consecutive windows of a long context
    max_question_length: int = 64  # longer questions are cut to their first tokens
    max_bad_answer_fraction: float = 0.01  # answer_start not matching the text: refuse above this share
    # language modelling
    block_size: int = 128  # tokens per training row (<= the model's n_positions)
    packing: bool = True  # join documents with eos and cut into blocks; false: one document per row, padded
    line_by_line: bool = True  # TXT files: one document per line; false: the whole file is one document
    # multiple choice (context from data.context_column, the label from data.label_column)
    endings_column: str | list[str] = "endings"  # a column holding a list, or one column per ending
    max_length: int = 128
    batch_size: int = 32  # per device; the effective batch is logged at start
    eval_batch_size: int | None = None  # default: 2 x batch_size (no gradients to keep)
    group_by_length: bool = False  # length-sorted padded batches (measured less stable); turns packing off
    # training batches of batch_size whole examples packed into rows of max_tokens_per_row (seq_cls,
    # token_cls, qa; datamodules/packing.py); evaluation keeps length-sorted padded batches. On in the
    # CLI's conf/config.yaml (chosen by measurement, docs/benchmark-history.md); off here, for datamodules
    # built directly (tests, notebooks), which then pad.
    pack_examples: bool = False
    max_tokens_per_row: int | None = None  # null: max(longest training row, 128), at most n_positions
    pad_to_multiple_of: int | None = None
    num_workers: int = 0
    cache_dir: str | None = None
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    max_val_tokens: int | None = None  # LM: validation sets scored on their first N tokens (datamodules/lm.py)
    # which rows max_*_samples keeps: "first" (the file's first N) or "random" (N drawn with
    # sample_seed, kept in file order: the same rows on every rank and every run with that seed)
    sample_strategy: str = "first"
    sample_seed: int = 0
    # Not a config key: the eval sets (val, val_<name>, test) read whole whatever max_eval_samples
    # says -- `eval` names here the sets whose file its command line gives (runfile.named_eval_sets).
    whole_eval_sets: tuple[str, ...] = ()


@dataclass
class RawSplit:
    rows: list[dict]
    identity: str  # what the cache key depends on: the file's content hash, or the Hub fingerprint
    key: str  # the config key it came from, for error messages
    where: str  # the file path or Hub split, for error messages
    lines: list[int] | None = None  # the file line each row starts on, when the format has lines
    labelled: bool = True  # false for `predict` inputs: encode_rows leaves the labels out
    first: int = 0  # the file's row number of rows[0] (a chunk of a `predict` input)
    numbers: list[int] | None = None  # the source's row number of each row, when they are a subset of it

    def subset(self, ids: list[int], tag: str, key: str | None = None) -> RawSplit:
        """The rows `ids` as a split of their own, in file order; `tag` says which rows (cache key)."""
        ids = sorted(ids)
        lines = [self.lines[i] for i in ids] if self.lines else None
        return RawSplit([self.rows[i] for i in ids], f"{self.identity}:{tag}", key or self.key, self.where, lines,
                        numbers=[self.number(i) for i in ids])

    def number(self, i: int) -> int:
        """The source's row number (from 0) of row i."""
        return self.numbers[i] if self.numbers is not None else self.first + i

    def locate(self, i: int) -> str:
        """Where row i is, for error messages: 'line 17' in a file, else 'row 17 (from 0)'."""
        return f"line {self.lines[i]}" if self.lines else f"row {self.number(i)} (counting from 0)"

    def locate_rows(self, rows: list[int], shown: int = 5) -> str:
        """Where some rows are: 'lines 3, 17 and 20', 'lines 3, 5, 8, 9, 12 and 40 more', or rows
        counted from 0 when the format has no lines."""
        first = [str(self.lines[i]) if self.lines else str(self.number(i)) for i in rows[:shown]]
        listed = (", ".join(first[:-1]) + " and " + first[-1]) if len(first) > 1 else first[0]
        if len(rows) > shown:
            listed = f"{', '.join(first)} and {len(rows) - shown} more"
        noun = ("line" if self.lines else "row") + ("s" if len(rows) > 1 else "")
        return f"{self.key}={self.where}, {noun} {listed}{'' if self.lines else ' (counting from 0)'}"


class ListDataset(Dataset):
    """Plain Python rows: random access is ~100x faster than indexing an Arrow table per example."""

    def __init__(self, rows: list[dict]):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        return self.rows[i]


class TaskDataModule(L.LightningDataModule):
    #: fields padded by the collator besides input_ids, with their pad value (e.g. token labels: -100)
    padded_fields: dict[str, int] = {}
    #: per-row fields kept for metrics but never batched (e.g. QA character offsets)
    unbatched_fields: tuple[str, ...] = ()
    #: rows per tokenize_batch call (datasets.map); None = the whole split at once, for kinds whose
    #: rows depend on the whole split (LM packing cuts one token stream into blocks)
    map_batch_size: int | None = 1000
    #: builds the batches (multiple choice adds each choice's summary-token position)
    collator_class: type[Collator] = Collator
    #: whether `data.pack_examples` applies (the kind's modules run packed batches; see packing.py)
    packable: bool = False
    #: the model's n_positions (set by build_datamodule): the longest packed row
    n_positions: int = 1024
    #: packed training batches all of one shape (build_datamodule: model.compile, which would
    #: recompile per shape); otherwise each batch takes only the rows it needs (less padding)
    static_shapes: bool = False

    def __init__(self, spec: DataSpec, tokenizer, seed: int = 0, label_space: LabelSpace | None = None,
                 label_names: list[str] | None = None, problem_type: str = "auto"):
        super().__init__()
        self.spec = spec
        self.tokenizer = tokenizer
        self.seed = seed
        self.label_space = label_space  # given when evaluating a checkpoint: never re-inferred
        self.label_names = label_names
        self.problem_type = problem_type
        self.datasets: dict[str, ListDataset] = {}
        self.examples: dict[str, list[dict]] = {}  # raw rows per split, as limited by max_*_samples
        self.rows_in_source: dict[str, int] = {}  # rows per split before that limit (file or Hub split)
        self.eval_sets: list[str] = []  # names of validation sets, "val" first
        self._prepared_stages: set[str] = set()
        #: config key -> (absolute path, content_digest) of every data file read (run info: resume checks them)
        self.file_digests: dict[str, tuple[str, str]] = {}

    # ---- hooks a task kind implements -------------------------------------------------------
    def required_columns(self, labelled: bool) -> dict[str, str]:
        raise NotImplementedError

    def fit_label_space(self, rows: list[dict]) -> LabelSpace:
        raise NotImplementedError

    def check_split(self, part: RawSplit, training: bool) -> None:
        """Refuse what would otherwise train or score silently on garbage (empty or mixed-type labels;
        in the training split, `training`, classes of a handful of rows), warn about empty inputs.
        Runs on every labelled split before the label space is inferred. Errors name the rows."""

    def encode_rows(self, rows: list[dict], part: RawSplit) -> dict[str, list]:
        """Columns for datasets.map: raw inputs + encoded targets, one entry per row. Errors name
        `part.key` and the row (`part.locate(i)`)."""
        raise NotImplementedError

    def tokenize_batch(self, batch: dict[str, list]) -> dict[str, list]:
        """Runs inside datasets.map(batched=True) and replaces every column: returns input_ids and
        whatever else a row needs (labels, ...). Rows out may outnumber rows in (windows).
        Without a "labels" column (predict inputs), rows carry no targets."""
        raise NotImplementedError

    def tokenize_inputs(self, batch: dict[str, list]) -> dict[str, list]:
        """tokenize_batch for unlabelled `predict` rows; a kind whose training rows are not one
        example each (LM packing) overrides it."""
        return self.tokenize_batch(batch)

    def iter_file(self, path: str, key: str) -> Iterator[tuple[dict, int | None]]:
        """(row, the line it starts on or None) of one data file, one at a time: streamed from
        CSV/TSV/JSONL, a JSON document parsed whole. Kinds with other formats override it."""
        return iter_records(path, key, self.spec.column_names)

    def read_file(self, path: str, key: str) -> tuple[list[dict], list[int] | None]:
        """Every row of one data file (+ the line each starts on; None for a format without lines)."""
        pairs = list(self.iter_file(path, key))
        lines = [line for _, line in pairs]
        return [row for row, _ in pairs], None if not lines or lines[0] is None else lines

    def preprocessing_params(self) -> dict[str, Any]:
        """Everything tokenize_batch depends on besides the data and tokenizer (cache key)."""
        return {"max_length": self.spec.max_length, "pair_separator": self.spec.pair_separator}

    def check_model_limits(self, n_positions: int) -> None:
        """Raise a UserError for data keys the model cannot take (called before loading any data)."""

    # ---- loading ------------------------------------------------------------------------------
    def _sources(self) -> dict[str, tuple[str, str | None, str | None]]:
        """split -> (config key, file, hub split), for every split this run has."""
        s = self.spec
        sources = {TRAIN: ("data.train_file", s.train_file, s.train_split),
                   VAL: ("data.validation_file", s.validation_file, s.validation_split)}
        for name, extra in (s.extra_validation or {}).items():
            sources[f"val_{name}"] = (f"data.extra_validation.{name}.file", extra.get("file"), extra.get("split"))
        sources[TEST] = ("data.test_file", s.test_file, s.test_split)
        # With local files, Hub splits are not used (a user running offline gives files).
        uses_files = bool(s.train_file or s.validation_file)
        return {split: (key, file, None if uses_files or not s.hub_path else hub)
                for split, (key, file, hub) in sources.items()}

    def _load(self, key: str, file: str | None, hub_split: str | None) -> RawSplit | None:
        """The split's rows, or None when the split is not configured."""
        if file:
            path = os.path.abspath(os.path.expanduser(file))
            rows, lines = self.read_file(path, key)
            if not rows:  # every reader's formats (e.g. an empty TXT file for LM)
                raise UserError(f"{key}={path}: the file has no data rows, so this split is empty. "
                                "Fix: point it at a file with examples.")
            digest = content_digest(path)  # read just now: from the page cache
            self.file_digests[key] = (path, digest)
            return RawSplit(rows, f"file:{digest}", key, path, lines)
        if hub_split:
            ds = _load_hub_split(self.spec.hub_path, self.spec.hub_name, hub_split, key)
            where = f"{self.spec.hub_path}/{self.spec.hub_name or ''}:{hub_split}"
            return RawSplit(ds.to_list(), f"hub:{where}:{compat.dataset_fingerprint(ds)}", key, where)
        return None

    def setup(self, stage: str | None = None) -> None:
        """Load, check and tokenize. Idempotent: the entry point calls it before building the model
        (label names must be known), Lightning calls it again."""
        if stage == "predict":
            return  # `predict` reads its input with predict_chunks(path); the run's splits are not needed
        need_train = stage in (None, "fit")
        key = "fit" if need_train else "eval"
        if key in self._prepared_stages or "fit" in self._prepared_stages:
            return
        raw: dict[str, RawSplit] = {}
        for split, (cfg_key, file, hub) in self._sources().items():
            if split == TRAIN and not need_train:
                continue
            loaded = self._load(cfg_key, file, hub)
            if loaded is not None:
                raw[split] = loaded
        if need_train and TRAIN not in raw:
            raise UserError("data.train_file is not set and this task has no Hub dataset. Fix: pass "
                            "data.train_file=<csv/tsv/json/jsonl> (and data.validation_file=...).")
        if VAL not in raw:
            if need_train and self.spec.validation_fraction:
                raw[TRAIN], raw[VAL] = self._hold_out(raw[TRAIN])
            else:
                raise UserError("data.validation_file is not set and there is no validation split. Fix: "
                                "pass data.validation_file=<file>, or data.validation_fraction=0.1 to hold "
                                "out part of the training data.")
        usable = {}  # the splits with labels (a test split may have none), train first
        for split, part in raw.items():
            if self._check_columns(part, labelled=split != TEST):
                usable[split] = part
            else:
                log.warning("%s has no labels (%s): skipping test metrics.", part.key,
                            ", ".join(self._label_columns()))
        for split, part in usable.items():
            self.check_split(part, training=split == TRAIN)
        if self.label_space is None:
            self.label_space = self.fit_label_space(raw[TRAIN].rows)
        for split, part in usable.items():
            self.rows_in_source[split] = len(part.rows)
            part = self.sample(part, self.row_limit(split))
            self.examples[split] = part.rows
            self.datasets[split] = self._tokenize(split, part)
        self.eval_sets = [s for s in self.datasets if s.startswith(VAL)]
        if need_train and self.packs:
            self.packed_layout()  # refuses a data.max_tokens_per_row the data does not fit, before training
        self._prepared_stages.add(key)

    def row_limit(self, split: str) -> int | None:
        """How many first rows of `split` are used (None: all): data.max_train_samples for training,
        data.max_eval_samples for each eval set, unless the set is to be read whole."""
        if split == TRAIN:
            return self.spec.max_train_samples
        return None if split in self.spec.whole_eval_sets else self.spec.max_eval_samples

    def row_limit_key(self, split: str) -> str:
        """The setting that cut an eval set, for the 'scored val: 32 of 300 rows (...)' line."""
        return f"data.max_eval_samples={self.row_limit(split)}"

    def sample(self, part: RawSplit, limit: int | None) -> RawSplit:
        """The rows of `part` that max_*_samples=`limit` keeps (all when None): its first `limit`, or
        with data.sample_strategy=random `limit` rows drawn with data.sample_seed (then kept in file
        order). Only the seed, the limit and the split's rows decide: every rank, and every run of
        the same config, gets the same rows (config.yaml records both keys; resume refuses a change)."""
        n = len(part.rows)
        if limit is None or limit >= n:
            return part.subset(range(n), f"all {n} rows")
        if self.spec.sample_strategy == "random":
            ids = random.Random(self.spec.sample_seed).sample(range(n), limit)
            return part.subset(ids, f"random {limit} rows, seed {self.spec.sample_seed}")
        return part.subset(range(limit), f"first {limit} rows")

    def scored_rows(self) -> dict[str, tuple[int, int]]:
        """Per eval set loaded (val, val_<name>, test): (examples scored, examples its file or Hub
        split holds); they differ where data.max_eval_samples cut the set."""
        return {split: (len(self.examples[split]), self.rows_in_source[split])
                for split in [*self.eval_sets, *([TEST] if self.has_test else [])]}

    def predict_chunks(self, path: str, chunk_rows: int, key: str = "input") -> Iterator[int]:
        """A `predict` input, `chunk_rows` rows at a time: the training formats, labels not needed
        (ignored when present). Each chunk is read, checked and tokenized into
        `examples`/`datasets["predict"]` (replacing the last one) before this yields the file's row
        number of its first row. Memory holds one chunk whatever the file's length; tokenized in
        memory, not cached on disk (a predict input is usually seen once). Errors name `key`."""
        file = os.path.abspath(os.path.expanduser(path))
        stat = os.stat(file)
        first = 0
        for rows, lines in chunked(self.iter_file(file, key), chunk_rows):
            part = RawSplit(rows, f"{file}:{stat.st_size}:{stat.st_mtime_ns}", key, file, lines, labelled=False,
                            first=first)
            require_columns(rows, self.required_columns(labelled=False), file, key, first)
            self.examples[PREDICT] = rows
            self.datasets[PREDICT] = ListDataset(self._tokenize_rows(self.tokenize_inputs, self.encode_rows(rows, part),
                                                                     TaskDataModule.map_batch_size))
            yield first
            first += len(rows)

    def count_predict_rows(self, path: str, key: str = "input") -> int:
        """The rows of a `predict` input, read once through (columns checked, nothing tokenized): every
        reading error, and an empty file, come before any work, and progress knows the total."""
        file = os.path.abspath(os.path.expanduser(path))
        total = 0
        for rows, _ in chunked(self.iter_file(file, key), 10_000):
            require_columns(rows, self.required_columns(labelled=False), file, key, total)
            total += len(rows)
        if not total:
            raise UserError(f"{key}={file}: the file has no rows to predict. Fix: point it at a file with examples.")
        return total

    def _label_columns(self) -> list[str]:
        inputs = set(self.required_columns(labelled=False).values())
        return [c for c in self.required_columns(labelled=True).values() if c not in inputs]

    def _check_columns(self, part: RawSplit, labelled: bool) -> bool:
        """Require the columns; a test split may lack labels (returns False then)."""
        if not labelled and any(c not in part.rows[0] for c in self._label_columns()):
            require_columns(part.rows, self.required_columns(labelled=False), part.where, part.key)
            return False
        require_columns(part.rows, self.required_columns(labelled=True), part.where, part.key)
        return True

    def holdout_group(self, row: dict) -> Any:
        """What keeps rows together in data.validation_fraction's hold-out: the value of
        data.validation_group_column (None: the row is a group of its own)."""
        column = self.spec.validation_group_column
        return row[column] if column else None

    def _hold_out(self, train: RawSplit) -> tuple[RawSplit, RawSplit]:
        """(train, validation) from the training rows: data.validation_fraction of them, drawn as
        whole groups (holdout_group), so no group is seen on both sides."""
        column = self.spec.validation_group_column
        if column:
            require_columns(train.rows, {"data.validation_group_column": column}, train.where, train.key)
        groups: dict[Any, list[int]] = {}
        for i, row in enumerate(train.rows):
            value = self.holdout_group(row)
            groups.setdefault(("row", i) if value is None else ("value", str(value)), []).append(i)
        order = list(groups.values())  # first-seen order: the same on every rank
        random.Random(self.seed).shuffle(order)
        wanted = max(1, int(len(train.rows) * self.spec.validation_fraction))
        held: list[int] = []
        taken = 0
        while len(held) < wanted and taken < len(order) - 1:  # at least one group stays for training
            held += order[taken]
            taken += 1
        if not held:
            raise UserError(f"data.validation_fraction={self.spec.validation_fraction}: all {len(train.rows)} rows of "
                            f"{train.key}={train.where} are one group (data.validation_group_column={column!r}), so "
                            "none can be held out without its group in training. Fix: pass data.validation_file, or "
                            "group by a column with several values.")
        tag = f"holdout:{self.spec.validation_fraction}:{column}:{self.seed}"
        kept = [i for group in order[taken:] for i in group]
        return (train.subset(kept, tag + ":train"),
                train.subset(held, tag + ":val", "data.validation_fraction"))

    def _tokenize(self, split: str, part: RawSplit) -> ListDataset:
        import datasets  # heavy import, only when data is actually prepared

        columns = self.encode_rows(part.rows, part)
        columns["example"] = list(range(len(part.rows)))
        tokenize, batch_size = self.tokenize_batch, self.map_batch_size
        fingerprint = self._fingerprint(part.identity, split)  # which rows: sample() and _hold_out tag it
        cache_dir = Path(self.spec.cache_dir or default_cache_dir()) / "tokenized"
        cache_dir.mkdir(parents=True, exist_ok=True)
        ds = datasets.Dataset.from_dict(columns)
        # One process tokenizes, the others wait and read its cache file: the ranks of a torchrun /
        # srun job (they all start at once), or two runs on the same data. This happens before the
        # Trainer exists (the model needs the label names), so Lightning's prepare_data hook with
        # its barrier cannot be used; a file lock works for every launcher. (Ranks Lightning itself
        # launches start after rank 0 has tokenized, and only read the cache.)
        with FileLock(str(cache_dir / f"{fingerprint}.lock")):
            if (cache_dir / f"{fingerprint}.arrow").exists():
                log.info("tokenized cache reused for %s (%s)", part.where, fingerprint)
            ds = ds.map(tokenize, batched=True, batch_size=batch_size, remove_columns=list(columns),
                        desc=f"Tokenizing {split}",
                        cache_file_name=str(cache_dir / f"{fingerprint}.arrow"), new_fingerprint=fingerprint,
                        load_from_cache_file=True)
        return ListDataset([{**row, "idx": i} for i, row in enumerate(ds.to_list())])

    @staticmethod
    def _tokenize_rows(tokenize: Callable[[dict[str, list]], dict[str, list]], columns: dict[str, list],
                       batch_size: int) -> list[dict]:
        """What `_tokenize` makes of `columns` (encode_rows' output) -- the same tokenize function
        over the same batches of rows, each row with its idx -- in memory, without datasets' cache."""
        n = len(next(iter(columns.values())))
        columns["example"] = list(range(n))
        rows: list[dict] = []
        for start in range(0, n, batch_size):
            out = tokenize({name: values[start:start + batch_size] for name, values in columns.items()})
            rows.extend(dict(zip(out, values)) for values in zip(*out.values()))
        return [{**row, "idx": i} for i, row in enumerate(rows)]

    def _fingerprint(self, identity: str, split: str) -> str:
        h = hashlib.sha256()
        h.update(json.dumps({
            "version": CACHE_VERSION, "kind": type(self).__name__, "source": identity,
            "label_space": self.label_space.to_dict() if self.label_space else None,
            "columns": self.required_columns(labelled=True),
            "params": self.preprocessing_params(),
        }, sort_keys=True, default=str).encode())
        h.update(_tokenizer_identity(self.tokenizer).encode())
        return f"{split}-{h.hexdigest()[:24]}"

    # ---- batches ------------------------------------------------------------------------------
    def _world(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def sampler(self, split: str, train: bool) -> LengthGroupedSampler:
        """This rank's batches of a split (train: shuffled per epoch; eval: every example once)."""
        rank, world = self._world()
        batch_size = self.spec.batch_size if train else (self.spec.eval_batch_size or 2 * self.spec.batch_size)
        lengths = [longest_sequence(r["input_ids"]) for r in self.datasets[split].rows]  # a row of choices: its longest
        return LengthGroupedSampler(lengths, batch_size, shuffle=train, seed=self.seed,
                                    group_by_length=self.spec.group_by_length, rank=rank, world_size=world)

    def collator(self) -> Collator:
        return self.collator_class(self.tokenizer.pad_token_id, self.spec.pad_to_multiple_of,
                                   self.padded_fields, skip=self.unbatched_fields)

    def _loader(self, split: str, train: bool) -> DataLoader:
        return BatchSource(self.sampler(split, train), self.collator()).loader(self.datasets[split], self.spec.num_workers)

    @property
    def packs(self) -> bool:
        # data.group_by_length=true asks for length-sorted padded batches: it turns packing off
        return self.spec.pack_examples and self.packable and not self.spec.group_by_length

    def packed_layout(self) -> tuple[int, int]:
        """(rows per batch, tokens per row) of packed training batches."""
        lengths = [len(r["input_ids"]) for r in self.datasets[TRAIN].rows]
        limit = self.spec.max_tokens_per_row
        if limit is not None and not max(lengths) <= limit <= self.n_positions:
            raise UserError(f"data.max_tokens_per_row={limit} must be between the longest training row "
                            f"({max(lengths)} tokens) and the model's n_positions ({self.n_positions}): every "
                            "example is packed whole into one row. Fix: set it in that range, or null for the "
                            "default (max(longest row, 128)).")
        return default_layout(lengths, self.spec.batch_size, self.n_positions, limit)

    def train_batches(self) -> BatchSource:
        """This rank's training batches: packed (data.pack_examples, packing.py) or padded. Both this
        task's train_dataloader and a multi-task run's mixer take them from here, so a task trains
        on the same batches alone or among others."""
        if not self.packs:
            if self.spec.pack_examples and not self.packable:  # on by default: lm and mc batch their own way
                log.debug("data.pack_examples does not apply to %s: padded batches.", type(self).__name__)
            return BatchSource(self.sampler(TRAIN, train=True), self.collator())
        rank, world = self._world()
        rows, row_len = self.packed_layout()
        lengths = [len(r["input_ids"]) for r in self.datasets[TRAIN].rows]
        sampler = PackedSampler(lengths, rows, row_len, max_examples=self.spec.batch_size, seed=self.seed,
                                rank=rank, world_size=world)
        if self.static_shapes:
            log.info("Packed training batches: %d rows x %d tokens (one shape), %d batches per epoch (%.0f%% of the "
                     "tokens real).", rows, row_len, sampler.num_batches,
                     100 * sum(lengths) / (sampler.num_batches * rows * row_len))
        else:
            log.info("Packed training batches: %d batches per epoch, each in as few rows of up to %d tokens as it "
                     "needs.", sampler.num_batches, row_len)
        collator = PackedCollator(self.collator(), row_len, self.tokenizer.pad_token_id,
                                  rows=rows if self.static_shapes else None, multiple=self.spec.pad_to_multiple_of or 1)
        return BatchSource(sampler, collator)

    def train_dataloader(self) -> DataLoader:
        return self.train_batches().loader(self.datasets[TRAIN], self.spec.num_workers)

    def val_dataloader(self) -> list[DataLoader]:
        return [self._loader(name, train=False) for name in self.eval_sets]

    def test_dataloader(self) -> DataLoader:
        return self._loader(TEST, train=False)

    def predict_dataloader(self) -> DataLoader:
        # Length-sorted like evaluation (least padding); outputs are put back in input order by idx.
        return self._loader(PREDICT, train=False)

    @property
    def has_test(self) -> bool:
        return TEST in self.datasets

    #: what the model's rows are called when they are not one per example (LM: blocks)
    row_name = "windows"

    def describe(self) -> str:
        """One line for the start-up log: problem type and examples per split, and the rows the model
        runs on where they differ (long contexts split into windows, LM text cut into blocks)."""
        def counts(sizes: dict[str, int]) -> str:
            return ", ".join(f"{split} {n:,}" for split, n in sizes.items())

        examples = {k: len(self.examples.get(k, v)) for k, v in self.datasets.items()}
        rows = {k: len(v) for k, v in self.datasets.items()}
        text = f"{self.label_space.problem_type}; examples: {counts(examples)}"
        return text if rows == examples else f"{text}; as {self.row_name}: {counts(rows)}"


def chunked(pairs: Iterator[tuple[dict, int | None]], size: int) -> Iterator[tuple[list[dict], list[int] | None]]:
    """(rows, their lines or None) of up to `size` (row, line) pairs at a time, read as consumed."""
    while chunk := list(islice(pairs, size)):
        lines = [line for _, line in chunk]
        yield [row for row, _ in chunk], None if lines[0] is None else lines


def is_blank(value: Any) -> bool:
    """An empty cell: None, NaN, whitespace-only text, or an empty list."""
    if isinstance(value, float):
        return value != value  # NaN
    return value is None or (isinstance(value, str) and not value.strip()) or (isinstance(value, list) and not value)


def check_texts(part: RawSplit, values: list[Any], what: str, items: bool = False, empty_ok: bool = False) -> None:
    """Inputs must be text (numbers are taken as text): a list or an object would be trained on as
    its Python repr, so it is refused with the rows named; with `items`, each value is a list
    (words, endings) whose items must be. Empty inputs (they train as nothing but a position to
    predict from) are counted in a warning (unless `empty_ok`); a split where every one is empty
    is refused."""
    def bad(value: Any) -> bool:
        if items:
            return not isinstance(value, list) or any(v is None or isinstance(v, (list, dict)) for v in value)
        return isinstance(value, (list, dict))

    wrong = [i for i, value in enumerate(values) if bad(value)]
    if wrong:
        found = values[wrong[0]]
        raise UserError(f"{len(wrong)} rows have a {what} that is not {'a list of texts' if items else 'text'} "
                        f"({part.locate_rows(wrong)}; e.g. {str(found)[:80]!r}). Fix: store "
                        f"{'a list of strings' if items else 'one string'} per row (or point the key at another column).")
    empty = [i for i, value in enumerate(values) if is_blank(value)]
    if not empty or empty_ok:
        return
    if len(empty) == len(values):
        raise UserError(f"{part.key}={part.where}: all {len(values)} rows have an empty {what}, so there is nothing "
                        f"to learn from. Fix: check the column name ({what}) or point {part.key} at the right file.")
    log.warning("%d of %d rows have an empty %s (%s); they are kept, as empty inputs.", len(empty), len(values),
                what, part.locate_rows(empty))


def _tokenizer_identity(tokenizer) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    text = backend.to_str() if backend is not None else json.dumps(tokenizer.get_vocab(), sort_keys=True)
    return hashlib.sha256(f"{text}|{tokenizer.pad_token}|{tokenizer.padding_side}".encode()).hexdigest()


def _load_hub_split(path: str, name: str | None, split: str, key: str):
    import datasets

    from gpt2tasks.backbone import hub_reachable

    hub_reachable()  # offline, datasets then reads its local cache at once instead of retrying for a minute
    try:
        return datasets.load_dataset(path, name, split=split)
    except Exception as exc:  # datasets raises many types (ConnectionError, FileNotFoundError, ValueError)
        raise UserError(
            f"data.hub_path={path}{f' (data.hub_name={name})' if name else ''}, split {split!r}: could not "
            f"load it from the Hugging Face Hub or the local cache ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:160] if str(exc) else ''}). Fix: when offline, pass local files "
            f"instead: data.train_file=... data.validation_file=... ({key} for this split)."
        ) from None
