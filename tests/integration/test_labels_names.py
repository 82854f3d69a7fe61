"""Label names are data (issue 28, class 9): whatever text a user's labels hold survives a run's
pictures, plots.json, config.yaml, the checkpoint, eval, predict and the export (config.json,
model card) exactly, and what a run writes beyond training grows with the number of classes, never
with its square.
"""

from __future__ import annotations

import json
import re
from functools import partial
from types import SimpleNamespace

import numpy as np
import pytest
import yaml
from omegaconf import OmegaConf

from gpt2tasks import plots
from gpt2tasks.literal import literal_config
from gpt2tasks.tasks.seq_cls import SeqClsModule
from gpt2tasks.tasks.token_cls import TokenClsModule
from gpt2tasks.train import train
from tests.conftest import compose, write_jsonl

# Markup, format strings, YAML's other types, OmegaConf interpolations, matplotlib's mathtext and
# legend marker, a newline, unicode, spaces kept, a name longer than any picture shows.
HOSTILE = ["$x^$", "_nolegend_", "{}", "%s", "a: b", "- x", '"quoted"', "<b>html</b>", "two\nlines", "ünï €",
           "x" * 300, "yes", "null", "1e3", "True", "${oc.env:HOME}", "${x}", "|pipe|", "[link](http://e)",
           " padded ", "# h", "`tick`", "back\\slash", "&amp;"]


def unescaped(cell: str) -> str:
    """A model card table cell as markdown renders it (backslash escapes removed)."""
    return re.sub(r"\\(.)", r"\1", cell.strip())


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory):
    home = tmp_path_factory.mktemp("labels")
    # JSON lines: a CSV reader strips the spaces around every field (" padded " would be "padded")
    data = write_jsonl(home / "train.jsonl", [{"text": f"word{i % len(HOSTILE)} row {i}", "label": HOSTILE[i % len(HOSTILE)]}
                                              for i in range(4 * len(HOSTILE))])
    cfg = compose(f"output_dir={home / 'run'}", "logger=none", "trainer.enable_progress_bar=false",
                  "task=text_classification", f"data.train_file={data}", f"data.validation_file={data}",
                  "trainer.max_epochs=1", "data.batch_size=32")
    # the classes named in the config too, so config.yaml holds them: as literal text, "${x}" not resolved
    cfg.task.label_names = literal_config({"names": HOSTILE}).names
    metrics = train(cfg)
    return home, metrics


def test_a_run_with_hostile_label_names_writes_them_exactly(hostile_run):
    home, metrics = hostile_run
    run = home / "run"
    data = json.loads((run / "plots" / "plots.json").read_text())
    assert data["confusion_matrix"]["labels"] == HOSTILE and list(data["class_report"]) == HOSTILE
    assert np.array(data["confusion_matrix"]["counts"]).sum() == len(HOSTILE) * 4
    for name in ("curves", "confusion_matrix", "class_report"):
        assert (run / "plots" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((run / "metrics.json").read_text()) == pytest.approx(metrics)
    saved = OmegaConf.load(run / "config.yaml")
    assert OmegaConf.to_container(saved, resolve=True)["task"]["label_names"] == HOSTILE


def test_eval_predict_and_export_keep_hostile_label_names(hostile_run, tmp_path):
    from transformers import AutoConfig

    from gpt2tasks.evaluation import evaluate_checkpoint
    from gpt2tasks.export import ExportOptions, export
    from gpt2tasks.predict import predict

    home, metrics = hostile_run
    ckpt = home / "run" / "checkpoints" / "best.ckpt"
    assert evaluate_checkpoint(str(ckpt)) == pytest.approx(metrics)
    out = tmp_path / "exported"
    export(ExportOptions(ckpt=str(ckpt), out=str(out)))
    config = AutoConfig.from_pretrained(out)
    assert [config.id2label[i] for i in range(len(HOSTILE))] == HOSTILE
    assert config.label2id == {name: i for i, name in enumerate(HOSTILE)}

    card = (out / "README.md").read_text()
    front = yaml.safe_load(card.split("---\n")[1])  # the YAML front matter still parses
    assert front["pipeline_tag"] == "text-classification"
    table = card.split("## Labels\n")[1].split("\n\n")[0].strip().splitlines()[2:]  # below the header rows
    cells = [row.split(" | ", 1)[1].rsplit(" |", 1)[0] for row in table]
    assert [unescaped(c) for c in cells] == [" ".join(name.splitlines()).strip() for name in HOSTILE]
    assert len(table) == len(HOSTILE)  # no name broke out of its row

    for source in (ckpt, out):
        count = predict(str(source), str(home / "train.jsonl"), str(tmp_path / f"{source.name}.jsonl"))
        lines = [json.loads(line) for line in (tmp_path / f"{source.name}.jsonl").read_text().splitlines()]
        assert len(lines) == count and all(list(line["scores"]) == HOSTILE and line["label"] in HOSTILE
                                           for line in lines)


# ---- many classes: bounded ------------------------------------------------------------------------
def test_a_many_class_confusion_stays_bounded(tmp_path):
    """3,000 classes: the matrix keeps the 29 most frequent true classes and one row/column for the rest."""
    classes, examples = 3000, 20_000
    rng = np.random.default_rng(0)
    names = [f"class {i} $x_{i}$" for i in range(classes)]
    true = rng.integers(0, classes, examples)
    true[:2000] = 7  # the most frequent class by far
    pred = np.where(rng.random(examples) < 0.5, true, rng.integers(0, classes, examples))
    found = plots.confusion(true, pred, names)
    assert found["confusion"].shape == (plots.MAX_CLASSES, plots.MAX_CLASSES)
    assert found["classes"] == classes and found["other"] == classes - (plots.MAX_CLASSES - 1)
    assert names[7] in found["labels"] and found["labels"][-1] == f"(the other {found['other']} classes)"
    assert found["confusion"].sum() == examples
    kept = names.index(found["labels"][0])
    # a kept class's row and column are exact: its recall and precision are those of the full matrix
    row = found["labels"].index(names[7])
    assert found["confusion"][row].sum() == (true == 7).sum() and found["confusion"][:, row].sum() == (pred == 7).sum()
    assert found["confusion"][row, row] == ((true == 7) & (pred == 7)).sum()
    assert kept < classes

    class History:
        train = [(1, 2.0, 1e-3), (2, 1.5, 1e-3)]
        evals = [(2, {"val/accuracy": 0.5})]

    # the kind's own pictures, as its module gives them (a stand-in holding what its validation left)
    kind_pictures = partial(SeqClsModule.pictures, SimpleNamespace(latest_diagnostics={"val": found}))
    data = plots.picture_data(kind_pictures, "val/accuracy", History(), {}, {"val": found})
    assert "3000 classes" in data["confusion_matrix"]["note"] and data["confusion_matrix"]["other"] == found["other"]
    assert list(data["class_report"]) == found["labels"][:-1]
    assert data["class_report"][names[7]]["support"] == int((true == 7).sum())
    figures = plots.write_pictures(tmp_path, data, "many classes")
    plots.close(figures)
    assert (tmp_path / "plots.json").stat().st_size < 100_000  # the full matrix: 9 million counts
    for name in ("confusion_matrix", "class_report"):
        import matplotlib.image

        height, width = matplotlib.image.imread(tmp_path / f"{name}.png").shape[:2]
        assert width <= 3000 and height <= 1500  # whatever the number of classes


def test_many_entity_types_and_labels_stay_bounded_in_the_report_and_card(cfg_factory, tmp_path):
    from gpt2tasks.export import MAX_CARD_METRICS, ExportOptions, Scores, model_card

    types = [f"$T{i}^$|x" for i in range(3000)]  # mathtext that does not parse, a table column break
    metrics = {"val/f1": 0.5, "val/accuracy": 0.9}
    for i, kind in enumerate(types):
        metrics.update({f"val/{kind}_precision": 0.5, f"val/{kind}_recall": 0.5, f"val/{kind}_f1": 0.5,
                        f"val/{kind}_number": float(i)})

    class History:
        train, evals = [], []

    kind_pictures = partial(TokenClsModule.pictures, SimpleNamespace(latest_diagnostics={}))
    report = plots.picture_data(kind_pictures, "val/f1", History(), metrics, {})["entity_report"]
    assert list(report) == types[-plots.MAX_CLASSES:]  # the types with the most entities
    plots.close(plots.write_pictures(tmp_path, {"entity_report": report}, "title"))
    assert (tmp_path / "entity_report.png").is_file()
    cfg = cfg_factory("task=sample_sentiment")
    info = {"label_space": {"problem_type": "single_label_classification", "names": types}, "command": None}
    scores = Scores(metrics, "Metrics of these weights: the run's metrics.json.", "step 1", {"step": 1}, of_run=True)
    card = model_card(cfg, info, scores, False, ExportOptions(), "title")
    assert len(card) < 20_000
    assert "| val/f1 | 0.5000 |" in card and "| val/accuracy | 0.9000 |" in card  # overall metrics first
    assert f"({len(metrics) - MAX_CARD_METRICS} more in the run's metrics.json)" in card
    assert f"({3000 - MAX_CARD_METRICS} more in config.json's id2label)" in card
    assert "| 0 | \\$T0^\\$\\|x |" in card
    meta = yaml.safe_load(card.split("---\n")[1])
    assert len(meta["model-index"][0]["results"][0]["metrics"]) == MAX_CARD_METRICS


def test_pictures_draw_names_as_plain_text_even_when_drawn_again_later():
    """Loggers (TensorBoard, W&B) render the figures again after plots.draw returned."""
    names = ["$x^$", "$\\frac{$", "a_b^c"]
    data = {"labels": names, "counts": [[1, 0, 0], [0, 1, 0], [0, 0, 1]], "what": "$"}
    fig = plots.draw("confusion_matrix", data, "title $x^$")
    fig.canvas.draw()  # outside plots' settings: the text artists keep theirs
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert labels == names and not any(t.get_parse_math() for t in fig.axes[0].get_xticklabels())
    plots.close({"c": fig})
    assert plots.shown("two\nlines") == "two lines" and plots.shown("x" * 40) == "x" * 27 + "\u2026"
