"""Jobs of a sweep (or the ranks of a torchrun job) that start together tokenize the same file into
one cache: the file lock in datamodules/base.py lets one process tokenize while the other waits and
reads its cache. Two real processes released at the same instant on a fresh cache folder."""

import hashlib
import json
import os
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO

# Each process builds the bundled sentiment task's datamodule on the shared cache folder, tells the
# test it is ready (imports done), waits for the go, tokenizes, and prints a digest of every split.
CHILD = r"""
import hashlib, json, os, pathlib, sys, time
from gpt2tasks.backbone import ModelSpec, load_tokenizer
from gpt2tasks.datamodules.base import DataSpec
from gpt2tasks.datamodules.seq_cls import SeqClsDataModule
from gpt2tasks.resources import DATA_DIR

cache, me = pathlib.Path(sys.argv[1]), sys.argv[2]
dm = SeqClsDataModule(DataSpec(train_file=str(DATA_DIR / "sample_sentiment" / "train.csv"),
                               validation_file=str(DATA_DIR / "sample_sentiment" / "validation.csv"),
                               cache_dir=str(cache)), load_tokenizer(ModelSpec()))
(cache.parent / f"ready-{me}").touch()
while not (cache.parent / "go").exists():
    time.sleep(0.001)
dm.setup("fit")
print(json.dumps({split: hashlib.sha256(json.dumps([{k: v for k, v in row.items() if k != "idx"}
                                                    for row in ds.rows]).encode()).hexdigest()
                  for split, ds in dm.datasets.items()}))
"""


def _digest(rows):
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()


@pytest.mark.slow  # two fresh interpreters importing torch, transformers and datasets: 15 s to minutes on 2 shared cores
def test_two_processes_tokenizing_the_same_file_at_once_share_one_valid_cache(tmp_path):
    import datasets

    cache = tmp_path / "cache"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    procs = [subprocess.Popen([sys.executable, "-c", CHILD, str(cache), str(i)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(2)]
    deadline = time.time() + 120
    while not all((tmp_path / f"ready-{i}").exists() for i in range(2)):
        assert time.time() < deadline and all(p.poll() is None for p in procs), [p.communicate() for p in procs]
        time.sleep(0.01)
    assert not (cache / "tokenized").exists()  # fresh: neither has tokenized yet
    (tmp_path / "go").touch()  # both start tokenizing now
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-3000:]
        results.append(json.loads(out.strip().splitlines()[-1]))

    assert results[0] == results[1] and set(results[0]) == {"train", "val"}
    # one cache file per split, complete: it holds exactly the rows both processes trained on
    arrows = sorted((cache / "tokenized").glob("*.arrow"))
    assert [a.name.split("-")[0] for a in arrows] == ["train", "val"]
    for arrow in arrows:
        rows = datasets.Dataset.from_file(str(arrow)).to_list()
        assert _digest(rows) == results[0][arrow.name.split("-")[0]]
    assert not [p for p in (cache / "tokenized").iterdir() if p.suffix not in (".arrow", ".lock")]  # no leftovers
