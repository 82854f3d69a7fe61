"""data/ is exactly what scripts/ make, and what it makes is usable."""

import csv
import subprocess
import sys
from pathlib import Path

from transformers import AutoTokenizer

REPO = Path(__file__).resolve().parents[2]


def _read(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_scripts_regenerate_the_committed_files(tmp_path):
    sample, tok = tmp_path / "sample_sentiment", tmp_path / "tokenizer"
    subprocess.run([sys.executable, REPO / "scripts" / "make_sample_data.py", "--out-dir", sample], check=True)
    subprocess.run([sys.executable, REPO / "scripts" / "make_tokenizer.py", "--out-dir", tok,
                    "--sample-dir", sample], check=True)
    for made in [*sample.iterdir(), *tok.iterdir()]:
        committed = REPO / "data" / made.parent.name / made.name
        assert made.read_bytes() == committed.read_bytes(), f"{committed} differs from what scripts/ make"


def test_ner_and_qa_samples_are_what_the_script_makes(tmp_path):
    subprocess.run([sys.executable, REPO / "scripts" / "make_sample_ner_qa.py", "--out-dir", tmp_path], check=True,
                   capture_output=True)
    made = sorted(p for p in tmp_path.rglob("*.jsonl"))
    assert [p.relative_to(tmp_path).as_posix() for p in made] == [
        f"{task}/{split}.jsonl" for task in ("sample_ner", "sample_qa") for split in ("test", "train", "validation")]
    for path in made:
        committed = REPO / "data" / path.relative_to(tmp_path)
        assert path.read_bytes() == committed.read_bytes(), f"{committed} differs from what scripts/ make"


def test_mc_sample_is_what_the_script_makes(tmp_path):
    subprocess.run([sys.executable, REPO / "scripts" / "make_sample_mc.py", "--out-dir", tmp_path], check=True,
                   capture_output=True)
    made = sorted(p for p in tmp_path.rglob("*.jsonl"))
    assert [p.relative_to(tmp_path).as_posix() for p in made] == [
        f"sample_mc/{split}.jsonl" for split in ("test", "train", "validation")]
    for path in made:
        committed = REPO / "data" / path.relative_to(tmp_path)
        assert path.read_bytes() == committed.read_bytes(), f"{committed} differs from what scripts/ make"
    assert sum(p.stat().st_size for p in made) < 1_000_000


def test_sample_splits_are_balanced_and_disjoint():
    splits = {name: _read(REPO / "data" / "sample_sentiment" / f"{name}.csv") for name in ("train", "validation", "test")}
    assert {k: len(v) for k, v in splits.items()} == {"train": 2000, "validation": 300, "test": 300}
    for rows in splits.values():
        assert sum(r["label"] == "positive" for r in rows) == len(rows) // 2
    texts = [{r["text"] for r in rows} for rows in splits.values()]
    assert not (texts[0] & texts[1]) and not (texts[0] & texts[2]) and not (texts[1] & texts[2])


def test_tokenizer_is_a_gpt2_style_byte_level_bpe():
    tok = AutoTokenizer.from_pretrained(REPO / "data" / "tokenizer")
    text = "Ünïcödé 🙂 text, numbers 3.14 and <b>tags</b>"
    assert tok.decode(tok(text)["input_ids"]) == text  # byte-level: anything round-trips
    assert tok.eos_token == "<|endoftext|>" and tok.pad_token is None
    assert tok("<|endoftext|>")["input_ids"] == [tok.eos_token_id]
    assert tok.tokenize("the movie")[1].startswith("Ġ")  # GPT-2's space marker, no prefix space


def test_lm_sample_is_what_the_script_makes(tmp_path):
    subprocess.run([sys.executable, REPO / "scripts" / "make_sample_lm.py", "--out-dir", tmp_path], check=True,
                   capture_output=True)
    made = sorted(p.name for p in tmp_path.iterdir())
    assert made == ["test.txt", "train.txt", "validation.txt"]
    for name in made:
        committed = REPO / "data" / "sample_lm" / name
        assert (tmp_path / name).read_bytes() == committed.read_bytes(), f"{committed} differs from what scripts/ make"
    assert sum((REPO / "data" / "sample_lm" / n).stat().st_size for n in made) < 1_000_000
