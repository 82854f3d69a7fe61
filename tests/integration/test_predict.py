"""`predict` for every head kind: the same answers as `eval`, one line per input row in input order
(batches small enough that length grouping reorders them), unlabelled inputs, exported folders
equal to .ckpt files, and bad inputs leaving no output behind.

One tiny checkpoint per kind, trained once for the module for one step: what is tested is that
predict agrees with eval, and a near-random model makes varied predictions to compare.
"""

import csv
import json
import re

import numpy as np
import pytest

from gpt2tasks.errors import UserError
from gpt2tasks.evaluation import evaluate_checkpoint
from gpt2tasks.inference import load_for_inference
from gpt2tasks.metrics import compute_metrics
from gpt2tasks.predict import predict
from gpt2tasks.resources import DATA_DIR
from gpt2tasks.runfile import EXPORT_INFO
from gpt2tasks.tasks.token_cls import entity_spans, ner_metrics
from gpt2tasks.train import train
from tests.conftest import compose

N_ROWS = 24  # rows of each validation file to predict
QUICK = ("trainer.max_steps=1", "data.batch_size=8")  # near the random init: varied predictions to compare
TRAIN = {"sample_sentiment": QUICK, "sample_ner": QUICK, "sample_mc": QUICK, "sample_lm": (*QUICK, "optim.lr=1e-6"),
         "sample_qa": (*QUICK, "data.max_length=96", "data.doc_stride=24", "data.max_question_length=24")}  # most contexts: 2+ windows
VALIDATION = {"sample_sentiment": "validation.csv", "sample_ner": "validation.jsonl", "sample_qa": "validation.jsonl",
              "sample_mc": "validation.jsonl", "sample_lm": "validation.txt"}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """task -> (best.ckpt, a file of the first N_ROWS validation rows), trained on first use."""
    made = {}

    def get(task: str):
        if task not in made:
            root = tmp_path_factory.mktemp(task)
            train(compose(f"task={task}", f"output_dir={root / 'run'}", "logger=none", "trainer.enable_progress_bar=false",
                          "trainer.max_epochs=1", "data.max_train_samples=64", f"data.max_eval_samples={N_ROWS}",
                          "data.test_file=null", "optim.warmup_ratio=0", *TRAIN[task]))
            name = VALIDATION[task]
            lines = (DATA_DIR / task / name).read_text().splitlines(keepends=True)
            subset = root / name
            subset.write_text("".join(lines[:N_ROWS + (name.endswith(".csv"))]))  # + the CSV header
            made[task] = (root / "run" / "checkpoints" / "last.ckpt", subset)  # max_steps may stop before a validation
        return made[task]

    return get


def rows_of(path):
    if path.suffix == ".csv":
        return list(csv.DictReader(path.open()))
    return [json.loads(line) for line in path.read_text().splitlines()]


def write_rows(path, rows):
    if path.suffix == ".csv":
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def lines_of(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def run_predict(ckpt, source, out, n_rows=None, **kwargs):
    """predict()'s lines, checking that there is one per input row, in order."""
    written = predict(str(ckpt), str(source), str(out), **kwargs)
    lines = lines_of(out)
    assert written == len(lines)
    if n_rows is None:
        n_rows = len(source.read_text().splitlines() if source.suffix == ".txt" else rows_of(source))
    assert [line["index"] for line in lines] == list(range(n_rows))
    return lines


def assert_close(a, b, path="line"):
    """Equal, floats to 1e-5 (another batch's padding may move the last bits), at any depth."""
    if isinstance(a, float) or isinstance(b, float):
        assert a == pytest.approx(b, abs=1e-5), path
    elif isinstance(a, (list, dict)):
        assert type(a) is type(b) and len(a) == len(b), path
        keys = a if isinstance(a, dict) else range(len(a))
        for k in keys:
            assert_close(a[k], b[k], f"{path}[{k!r}]")
    else:
        assert a == b, path


def eval_metrics(ckpt, subset, output=None):
    metrics = evaluate_checkpoint(str(ckpt), [f"data.validation_file={subset}", "data.test_file=null"], output)
    return {k.removeprefix("val/"): v for k, v in metrics.items()}


def test_seq_cls_labels_match_eval_in_input_order_without_labels(run, tmp_path):
    ckpt, subset = run("sample_sentiment")
    lines = run_predict(ckpt, subset, tmp_path / "p.jsonl", batch_size=5)
    rows = rows_of(subset)
    names = sorted({r["label"] for r in rows})
    assert all(line["label"] == max(line["scores"], key=line["scores"].get) for line in lines)
    assert all(sum(line["scores"].values()) == pytest.approx(1.0) for line in lines)
    # eval's accuracy and F1 from predict's labels (one-hot logits reproduce the argmax)
    logits = np.array([[float(line["label"] == n) for n in names] for line in lines])
    gold = np.array([names.index(r["label"]) for r in rows])
    assert compute_metrics(["accuracy", "f1"], "single_label_classification", logits, gold) == pytest.approx(
        {k: v for k, v in eval_metrics(ckpt, subset).items() if k in ("accuracy", "f1")})
    # The batches really are reordered (longest first), so input order is restored, not kept.
    _, datamodule, _ = load_for_inference(str(ckpt), ["data.eval_batch_size=5"])
    next(datamodule.predict_chunks(str(subset), N_ROWS))
    assert [int(i) for batch in datamodule.predict_dataloader() for i in batch["idx"]] != list(range(N_ROWS))
    # Reversed and unlabelled: the same predictions, reversed (order never depends on batching).
    reverse = write_rows(tmp_path / "reversed.csv", [{"text": r["text"]} for r in reversed(rows)])
    again = run_predict(ckpt, reverse, tmp_path / "r.jsonl", batch_size=3)
    assert_close([{**a, "index": b["index"]} for a, b in zip(reversed(again), lines)], lines)


def test_token_cls_tags_match_eval_and_entities(run, tmp_path):
    ckpt, subset = run("sample_ner")
    rows = rows_of(subset)
    unlabelled = write_rows(tmp_path / "words.jsonl", [{"tokens": r["tokens"]} for r in rows])
    lines = run_predict(ckpt, unlabelled, tmp_path / "p.jsonl", batch_size=4)
    assert [len(line["tags"]) for line in lines] == [len(r["tokens"]) for r in rows]
    assert all(line["entities"] == entity_spans(r["tokens"], line["tags"]) for line, r in zip(lines, rows))
    scores = ner_metrics([r["ner_tags"] for r in rows], [line["tags"] for line in lines])
    metrics = eval_metrics(ckpt, subset)
    assert {k: scores[k] for k in metrics if k != "loss"} == pytest.approx({k: v for k, v in metrics.items() if k != "loss"})
    # The same sentences as a CoNLL column file (tags present, ignored): the same tags.
    conll = tmp_path / "words.conll"
    conll.write_text("".join("".join(f"{w} {t}\n" for w, t in zip(r["tokens"], r["ner_tags"])) + "\n" for r in rows))
    assert run_predict(ckpt, conll, tmp_path / "c.jsonl", n_rows=len(rows), batch_size=8) == lines


def test_qa_answers_equal_eval_predictions(run, tmp_path):
    ckpt, subset = run("sample_qa")
    eval_metrics(ckpt, subset, output=str(tmp_path / "eval" / "metrics.json"))
    expected = json.loads((tmp_path / "eval" / "predictions.json").read_text())
    rows = rows_of(subset)
    lines = run_predict(ckpt, subset, tmp_path / "p.jsonl", batch_size=16)  # several windows per context
    assert [line["id"] for line in lines] == [r["id"] for r in rows] == list(expected)
    assert {line["id"]: line["answer"] for line in lines} == expected
    for line, row in zip(lines, rows):
        assert row["context"][line["start"]:line["end"]] == line["answer"] and isinstance(line["score"], float)
    # The official nested SQuAD JSON of the same questions: the same lines.
    nested = tmp_path / "squad.json"
    nested.write_text(json.dumps({"data": [{"title": "t", "paragraphs": [
        {"context": r["context"], "qas": [{"id": r["id"], "question": r["question"], "answers": []}]} for r in rows]}]}))
    assert run_predict(ckpt, nested, tmp_path / "n.jsonl", n_rows=len(rows), batch_size=32) == lines


def test_mc_choices_match_eval_accuracy_without_labels(run, tmp_path):
    ckpt, subset = run("sample_mc")
    rows = rows_of(subset)
    unlabelled = write_rows(tmp_path / "mc.jsonl", [{k: v for k, v in r.items() if k != "label"} for r in rows])
    lines = run_predict(ckpt, unlabelled, tmp_path / "p.jsonl", batch_size=5)
    assert all(len(line["scores"]) == 4 and sum(line["scores"]) == pytest.approx(1.0) for line in lines)
    assert all(line["choice"] == int(np.argmax(line["scores"])) for line in lines)
    accuracy = np.mean([line["choice"] == r["label"] for line, r in zip(lines, rows)])
    assert accuracy == pytest.approx(eval_metrics(ckpt, subset)["accuracy"])


def test_lm_continuations_batched_equal_one_prompt_at_a_time(run, tmp_path):
    ckpt, subset = run("sample_lm")
    prompts = [" ".join(line.split()[:n]) for line, n in zip(subset.read_text().splitlines(), [3, 9, 1, 14, 6, 2, 11])]
    prompts.insert(3, "")  # an empty line still gets its own continuation
    source = tmp_path / "prompts.txt"
    source.write_text("".join(p + "\n" for p in prompts))
    lines = run_predict(ckpt, source, tmp_path / "p.jsonl", batch_size=4, options={"max_new_tokens": 6})
    _, datamodule, module = load_for_inference(str(ckpt))
    tokenizer = datamodule.tokenizer
    module.eval()
    # The training-time sampler: greedy, one unpadded prompt at a time, eos first.
    alone = [greedy.split(tokenizer.eos_token)[0] for _, greedy, _ in module.sample(tokenizer, prompts, 6, 0.9)]
    assert [line["continuation"] for line in lines] == alone
    assert len(set(alone)) > 1  # the near-random model continues prompts differently
    sampled = [run_predict(ckpt, source, tmp_path / f"s{i}.jsonl", batch_size=4,
                           options={"max_new_tokens": 6, "do_sample": True, "top_p": 0.9}) for i in range(2)]
    assert sampled[0] == sampled[1]  # seeded by the run's seed


def export_folder(ckpt, folder):
    from gpt2tasks.export import ExportOptions, export

    return export(ExportOptions(ckpt=str(ckpt), out=str(folder)))


@pytest.mark.parametrize("task", list(TRAIN))
def test_exported_folder_predicts_like_the_checkpoint(run, tmp_path, task):
    ckpt, subset = run(task)
    folder = export_folder(ckpt, tmp_path / "export")
    options = {"max_new_tokens": 4} if task == "sample_lm" else None
    from_ckpt = run_predict(ckpt, subset, tmp_path / "ckpt.jsonl", options=options)
    from_folder = run_predict(folder, subset, tmp_path / "folder.jsonl", options=options)
    assert_close(from_folder, from_ckpt)


def test_bad_inputs_raise_a_user_error_and_write_nothing(run, tmp_path):
    ckpt, subset = run("sample_sentiment")
    out = tmp_path / "p.jsonl"
    no_text = write_rows(tmp_path / "no_text.csv", [{"sentence": "fine", "label": "positive"}])
    cases = [
        ((str(ckpt), str(tmp_path / "missing.csv")), "input="),
        ((str(ckpt), str(no_text)), "data.text_column='text'"),
        ((str(ckpt), str(subset)), "'data.nope'", ["data.nope=1"]),
        ((str(tmp_path / "none.ckpt"), str(subset)), "ckpt="),
        ((str(subset), str(subset)), "not a readable PyTorch checkpoint"),
        ((str(tmp_path), str(subset)), f"no {EXPORT_INFO}"),
    ]
    for args, expected, *overrides in cases:
        with pytest.raises(UserError) as err:
            predict(*args, str(out), *overrides)
        assert expected in str(err.value), str(err.value)
        assert not out.exists()
    with pytest.raises(UserError, match="max_new_tokens is not an option of seq_cls"):
        predict(str(ckpt), str(subset), str(out), options={"max_new_tokens": 3})
    out.write_text("keep me\n")
    with pytest.raises(UserError, match="overwrite=true"):
        predict(str(ckpt), str(subset), str(out))
    assert out.read_text() == "keep me\n"
    assert predict(str(ckpt), str(subset), str(out), overwrite=True) == N_ROWS
    assert len(out.read_text().splitlines()) == N_ROWS


def test_a_failure_while_predicting_leaves_no_output(run, tmp_path, monkeypatch):
    ckpt, subset = run("sample_mc")
    from gpt2tasks.tasks.mc import MultipleChoiceModule

    def broken(self, outputs, datamodule):
        raise RuntimeError("boom")

    monkeypatch.setattr(MultipleChoiceModule, "predict_rows", broken)
    with pytest.raises(RuntimeError, match="boom"):
        predict(str(ckpt), str(subset), str(tmp_path / "p.jsonl"))
    assert list(tmp_path.iterdir()) == []  # no output and no temporary file


def test_cli_predict_writes_lines_and_reports_errors(run, tmp_path, cli, caplog):
    ckpt, subset = run("sample_sentiment")
    done = cli("predict", f"ckpt={ckpt}", f"input={subset}", f"output={tmp_path / 'p.jsonl'}", "batch_size=7",
               "chunk_rows=10")
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert [line["index"] for line in lines] == list(range(N_ROWS)) and {"label", "scores"} <= set(lines[0])
    # the progress of the whole file, not of a chunk: not a terminal, so a plain line at the end
    assert re.search(rf"predict: {N_ROWS}/{N_ROWS} rows \(100%\), [\d,]+ rows/s, ETA 0s", caplog.text), caplog.text[-2000:]
    again = cli("predict", f"ckpt={ckpt}", f"input={subset}", f"output={tmp_path / 'p.jsonl'}")
    assert again.returncode == 2 and "overwrite=true" in again.stderr and "Traceback" not in again.stderr
    helped = cli("predict", "--help")
    assert helped.returncode == 0 and "ckpt=" in helped.stdout and "continuation" in helped.stdout


# ---- files of any length: chunks, several processes, interruption ------------------------------
def lm_prompts(path):
    """The first words of the LM sample's lines: short prompts, quick to continue."""
    return [" ".join(line.split()[:n]) for line, n in zip(path.read_text().splitlines(), [3, 9, 1, 14, 6, 2] * 4)]


@pytest.mark.parametrize("task", list(TRAIN))
def test_chunked_predict_equals_one_chunk(run, tmp_path, task):
    # 24 rows, 5 at a time: five chunks, the last one short; batches of 3 cut across nothing.
    ckpt, subset = run(task)
    options = {"max_new_tokens": 3} if task == "sample_lm" else None
    whole = run_predict(ckpt, subset, tmp_path / "whole.jsonl", batch_size=3, options=options)
    chunked = run_predict(ckpt, subset, tmp_path / "chunked.jsonl", batch_size=3, options=options, chunk_rows=5)
    assert_close(chunked, whole)  # floats to 1e-5: a chunk's batches pad other rows together


def test_interrupted_predict_leaves_no_output(run, tmp_path, monkeypatch):
    ckpt, subset = run("sample_sentiment")
    from gpt2tasks.tasks.seq_cls import SeqClsModule

    real, seen = SeqClsModule.predict_rows, []

    def interrupted(self, outputs, datamodule):
        seen.append([p.name for p in tmp_path.iterdir()])
        if len(seen) == 3:
            raise KeyboardInterrupt  # Ctrl-C in the third chunk
        return real(self, outputs, datamodule)

    monkeypatch.setattr(SeqClsModule, "predict_rows", interrupted)
    out = tmp_path / "p.jsonl"
    with pytest.raises(KeyboardInterrupt):
        predict(str(ckpt), str(subset), str(out), chunk_rows=10)
    # The chunks went to one temporary file beside the output as they finished; it is gone, and
    # there is no output.
    [[temporary]] = {tuple(names) for names in seen}
    assert temporary.startswith(".p.jsonl.")
    assert list(tmp_path.iterdir()) == []


def test_a_missing_column_in_a_later_chunk_fails_before_any_work(run, tmp_path):
    ckpt, subset = run("sample_sentiment")
    rows = [{"text": r["text"]} for r in rows_of(subset)]
    rows[17] = {"sentence": rows[17]["text"]}
    source = tmp_path / "rows.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(UserError, match=r"row 17 \(counting from 0\) has no field for data.text_column='text'"):
        predict(str(ckpt), str(source), str(tmp_path / "p.jsonl"), chunk_rows=5)
    assert [p.name for p in tmp_path.iterdir()] == ["rows.jsonl"]


@pytest.mark.slow  # two processes: ~30 s of 2 CPU cores
def test_two_processes_write_the_lines_of_one_in_input_order(run, tmp_path):
    from tests.conftest import run_cli

    ckpt, subset = run("sample_sentiment")
    one = run_predict(ckpt, subset, tmp_path / "one.jsonl", batch_size=3, chunk_rows=10)
    done = run_cli("predict", f"ckpt={ckpt}", f"input={subset}", f"output={tmp_path / 'two.jsonl'}", "batch_size=3",
                   "chunk_rows=10", "trainer.accelerator=cpu", "trainer.devices=2")
    assert done.returncode == 0, done.stderr[-3000:]
    printed = done.stdout + done.stderr  # log lines go to stdout, warnings to stderr (one console format)
    assert "world_size: 2" in printed or "distributed_backend=gloo" in printed, printed[-3000:]
    assert_close(lines_of(tmp_path / "two.jsonl"), one)  # one line per row, in order, written once
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.jsonl", "two.jsonl"]
