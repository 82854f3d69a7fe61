"""The pictures of a run, written to `<output_dir>/plots/` when it ends (and copied into exports).

- `curves.png`: training loss (raw and smoothed), the monitored metric at every validation, and
  the learning rate, against the optimizer step;
- classification (single-label seq_cls): `confusion_matrix.png` (rows true, columns predicted, on
  the best checkpoint's validation set) and `class_report.png` (precision/recall/F1 per class,
  support in the labels);
- token classification (NER): `entity_report.png` (entity-level precision/recall/F1 per type,
  support = true entities) and `confusion_matrix.png` of the word-level tags;
- language modelling: `perplexity.png` (validation perplexity, and exp of the smoothed train loss).

`plots.json` beside them holds the numbers each picture shows. The numbers are computed here
without matplotlib; drawing imports it (headless Agg backend) only when a picture is written.

Class names are the user's data: plots.json holds them exactly, and the pictures draw them as
plain text (never matplotlib's mathtext, which reads `$...$` as TeX and fails on e.g. `$x^$`),
shortened to fit. What is kept grows with the number of classes, never with its square: above
MAX_CLASSES classes, the matrix and the per-class report keep the most frequent ones (see
`confusion`), and plots.json and the log say so.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

PLOTS_DIR = "plots"
# A confusion matrix of C classes is C² counts: a 10,000-class run wrote a 701 MB plots.json, and
# built an 800 MB matrix at every validation. Up to MAX_CLASSES classes everything is kept; above,
# the MAX_CLASSES - 1 classes with the most validation examples, and one last row and column for
# all the others (the per-class report and its picture keep the same classes).
MAX_CLASSES = 30
# Longest class name drawn in a picture (plots.json keeps the whole name).
MAX_SHOWN_CHARS = 28

log = logging.getLogger(__name__)


# ---- the numbers ------------------------------------------------------------------------------
def confusion_counts(true: np.ndarray, pred: np.ndarray, num_classes: int) -> np.ndarray:
    """(num_classes, num_classes) int counts: row = true class, column = predicted class."""
    counts = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(counts, (np.asarray(true, dtype=np.int64), np.asarray(pred, dtype=np.int64)), 1)
    return counts


def confusion(true: np.ndarray, pred: np.ndarray, names: list[str], what: str = "") -> dict[str, Any]:
    """The validation set's confusion as a task's `diagnostics` gives it (and plots.json holds it):
    {"confusion": counts, "labels": row/column names, "what": what is counted}, for class ids
    `true` and `pred` of `names`. Above MAX_CLASSES classes, only the MAX_CLASSES - 1 most frequent
    true classes (ties: the lower id) keep a row and a column, in class order, and the last row and
    column count every other class: then also "classes" (how many there are) and "other" (how
    many were folded). Precision, recall and support of a kept class are exact either way: its
    column still counts every prediction of it, its row every example of it. Memory and size grow
    with the number of examples and MAX_CLASSES only."""
    true, pred = np.asarray(true, dtype=np.int64), np.asarray(pred, dtype=np.int64)
    if len(names) <= MAX_CLASSES:
        return {"confusion": confusion_counts(true, pred, len(names)), "labels": list(names), "what": what}
    keep = MAX_CLASSES - 1
    support = np.bincount(true, minlength=len(names))
    kept = np.sort(np.argsort(-support, kind="stable")[:keep])
    slot = np.full(len(names), keep, dtype=np.int64)  # class id -> its row/column; the others: the last one
    slot[kept] = np.arange(keep)
    folded = len(names) - keep
    return {"confusion": confusion_counts(slot[true], slot[pred], MAX_CLASSES),
            "labels": [names[i] for i in kept] + [f"(the other {folded} classes)"], "what": what,
            "classes": len(names), "other": folded}


def class_report(counts: np.ndarray, names: list[str]) -> dict[str, dict[str, float]]:
    """Per class: precision, recall, f1 and support (true examples) from a confusion matrix
    (0 where undefined, as sklearn's zero_division=0); `names` may leave out the last, folded
    row of a bounded matrix (see `confusion`)."""
    counts = np.asarray(counts, dtype=np.float64)
    right, predicted, support = np.diag(counts), counts.sum(0), counts.sum(1)
    report = {}
    for i, name in enumerate(names):
        p = right[i] / predicted[i] if predicted[i] else 0.0
        r = right[i] / support[i] if support[i] else 0.0
        report[name] = {"precision": float(p), "recall": float(r), "f1": float(2 * p * r / (p + r)) if p + r else 0.0,
                        "support": int(support[i])}
    return report


def entity_report(metrics: dict[str, float], eval_set: str = "val") -> dict[str, dict[str, float]]:
    """NER per entity type from the run's metrics (`val/PER_precision`, ..., `val/PER_number`)."""
    prefix, report = f"{eval_set}/", {}
    for name, value in metrics.items():
        if name.startswith(prefix) and name.endswith("_number"):
            kind = name[len(prefix):-len("_number")]
            report[kind] = {k: float(metrics.get(f"{prefix}{kind}_{k}", 0.0)) for k in ("precision", "recall", "f1")}
            report[kind]["support"] = int(value)
    return report


def smooth(values: list[float], weight: float = 0.9) -> list[float]:
    """TensorBoard's exponential moving average, debiased (so the first points are not pulled to 0)."""
    out, avg = [], 0.0
    for i, value in enumerate(values, start=1):
        avg = weight * avg + (1 - weight) * value
        out.append(avg / (1 - weight ** i))
    return out


def run_name(cfg) -> str:
    """A run's short name from its model and task, e.g. "gpt2-sst2" (model cards, picture titles)."""
    name_or_path = cfg.model.get("name_or_path")
    model = Path(str(name_or_path).rstrip("/")).name if name_or_path else "tiny-gpt2"
    return f"{model}-{cfg.task.name}"


def picture_data(kind: str, monitor: str, history, metrics: dict[str, float],
                 diagnostics: dict[str, dict]) -> dict[str, Any]:
    """What each picture of this run shows: {picture name: its numbers}."""
    steps = [s for s, _, _ in history.train]
    losses = [loss for _, loss, _ in history.train]
    evals = [(s, m) for s, m in history.evals if monitor in m]
    data: dict[str, Any] = {"curves": {
        "step": steps, "train_loss": losses, "train_loss_smoothed": smooth(losses),
        "lr": [lr for _, _, lr in history.train],
        "monitor": monitor, "monitor_step": [s for s, _ in evals], "monitor_value": [m[monitor] for _, m in evals]}}
    val = diagnostics.get("val", {})  # the module's `diagnostics` of the validation set (`confusion`)
    if "confusion" in val:
        counts, labels = np.asarray(val["confusion"]), list(val["labels"])
        data["confusion_matrix"] = {"labels": labels, "counts": counts.tolist(), "what": val.get("what", "")}
        if "other" in val:
            bounded = {"classes": int(val["classes"]), "other": int(val["other"]), "note": (
                f"{val['classes']} classes: the confusion matrix and the class report keep the {len(labels) - 1} "
                f"with the most validation examples; the matrix's last row and column count the other "
                f"{val['other']} (all of them would be {val['classes']}² counts)")}
            data["confusion_matrix"].update(bounded)
            log.info("plots: confusion matrix and class report of the %s", bounded["note"])
        if kind == "seq_cls":
            data["class_report"] = class_report(counts, labels[:-1] if "other" in val else labels)
    if kind == "token_cls":
        report = entity_report(metrics)
        if len(report) > MAX_CLASSES:  # the types with the most true entities
            log.info("plots: entity report of the %d entity types with the most entities (of %d)", MAX_CLASSES,
                     len(report))
            top = sorted(report, key=lambda name: -report[name]["support"])[:MAX_CLASSES]
            report = {name: report[name] for name in report if name in top}
        if report:
            data["entity_report"] = report
    if kind == "lm":
        ppl = [(s, m["val/perplexity"]) for s, m in history.evals if "val/perplexity" in m]
        data["perplexity"] = {"step": [s for s, _ in ppl], "val_perplexity": [v for _, v in ppl],
                              "train_step": steps,
                              "train_perplexity_smoothed": [math.exp(min(v, 50.0)) for v in smooth(losses)]}
    return data


# ---- the pictures -----------------------------------------------------------------------------
def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)  # headless: no display needed, never opens a window
    import matplotlib.pyplot as plt

    return plt


# Every text artist of our pictures is plain text: with mathtext on, a class name or a title with
# two `$` is parsed as TeX (`$x^$` raises, and fails the run after training). Text artists read
# these settings when they are made, so loggers that draw the figures again later see them too.
PLAIN_TEXT = {"text.parse_math": False, "text.usetex": False}


def shown(name: str) -> str:
    """A class name as a picture draws it: on one line, at most MAX_SHOWN_CHARS characters."""
    text = " ".join(str(name).split("\n"))
    text = "".join(c if c.isprintable() else " " for c in text)
    return text if len(text) <= MAX_SHOWN_CHARS else text[:MAX_SHOWN_CHARS - 1] + "\u2026"


def draw(name: str, numbers: dict[str, Any], title: str):
    """A matplotlib Figure for one picture of `picture_data`."""
    import matplotlib

    with matplotlib.rc_context(PLAIN_TEXT):
        if name in ("class_report", "entity_report"):
            what = "per-class report" if name == "class_report" else "entity-level scores per type"
            return _draw_report(numbers, f"{title}\n{what}, validation")
        return {"curves": _draw_curves, "confusion_matrix": _draw_confusion,
                "perplexity": _draw_perplexity}[name](numbers, title)


def _draw_curves(d: dict[str, Any], title: str):
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    loss_ax, metric_ax, lr_ax = axes
    loss_ax.plot(d["step"], d["train_loss"], color="tab:blue", alpha=0.25, linewidth=0.8, label="per step")
    loss_ax.plot(d["step"], d["train_loss_smoothed"], color="tab:blue", label="smoothed")
    loss_ax.set(title="train loss", xlabel="step")
    loss_ax.legend(fontsize=8)
    metric_ax.plot(d["monitor_step"], d["monitor_value"], marker="o", color="tab:green")
    metric_ax.set(title=d["monitor"], xlabel="step")
    if not d["monitor_step"]:
        metric_ax.text(0.5, 0.5, "no validation ran", ha="center", va="center", transform=metric_ax.transAxes)
    lr_ax.plot(d["step"], d["lr"], color="tab:orange")
    lr_ax.set(title="learning rate", xlabel="step")
    lr_ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def _draw_confusion(d: dict[str, Any], title: str):
    plt = _pyplot()
    counts, labels = np.asarray(d["counts"]), [shown(name) for name in d["labels"]]
    size = min(3 + 0.45 * len(labels), 12)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(counts, cmap="Blues", vmin=0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set(xlabel="predicted", ylabel="true")
    if len(labels) <= 20:  # counts stay readable up to about this many classes
        threshold = counts.max() / 2 if counts.size else 0
        for (i, j), n in np.ndenumerate(counts):
            ax.text(j, i, str(n), ha="center", va="center", fontsize=8, color="white" if n > threshold else "black")
    ax.set_title(f"{title}\nconfusion matrix, validation ({d['what']})" if d.get("what") else
                 f"{title}\nconfusion matrix, validation", fontsize=10)
    fig.tight_layout()
    return fig


def _draw_report(report: dict[str, dict[str, float]], title: str):
    plt = _pyplot()
    names = list(report)
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(min(max(5, 1.1 * len(names) + 2), 3 + 0.75 * MAX_CLASSES), 3.6))
    for offset, (key, color) in zip((-0.27, 0, 0.27), (("precision", "tab:blue"), ("recall", "tab:orange"),
                                                          ("f1", "tab:green"))):
        values = [report[n][key] for n in names]
        bars = ax.bar(x + offset, values, width=0.27, label=key, color=color)
        ax.bar_label(bars, fmt="%.2f", fontsize=7, padding=1)
    ax.set_xticks(x, [f"{shown(n)}\n(n={report[n]['support']})" for n in names], fontsize=8)
    ax.set(ylim=(0, 1.12), ylabel="score")
    ax.legend(fontsize=8, ncols=3, loc="upper center")
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def _draw_perplexity(d: dict[str, Any], title: str):
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.plot(d["train_step"], d["train_perplexity_smoothed"], color="tab:blue", alpha=0.6, label="train (smoothed)")
    ax.plot(d["step"], d["val_perplexity"], marker="o", color="tab:green", label="validation")
    ax.set(xlabel="step", ylabel="perplexity", yscale="log", title=f"{title}\nperplexity")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def write_pictures(folder: Path, data: dict[str, Any], title: str) -> dict[str, Any]:
    """`<folder>/<name>.png` per picture and `plots.json`; returns {name: Figure} for the loggers
    (close them when done)."""
    plt = _pyplot()
    folder.mkdir(parents=True, exist_ok=True)
    figures = {}
    for name, numbers in data.items():
        fig = draw(name, numbers, title)
        fig.savefig(folder / f"{name}.png", dpi=100)
        figures[name] = fig
    (folder / "plots.json").write_text(json.dumps(data, indent=1) + "\n")
    return figures


def close(figures: dict[str, Any]) -> None:
    plt = _pyplot()
    for fig in figures.values():
        plt.close(fig)
