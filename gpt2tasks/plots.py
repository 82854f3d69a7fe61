"""The pictures of a run, written to `<output_dir>/plots/` when it ends (and copied into exports).

- `curves.png`: the training loss (raw and smoothed) and the validation loss at every validation
  on one panel, the monitored metric at every validation, and the learning rate, against the
  optimizer step; the checkpoint the run keeps (best.ckpt) is a dotted line at its step, its
  monitored value named in the legend;
- classification (single-label seq_cls): `confusion_matrix.png` (rows true, columns predicted, on
  the best checkpoint's validation set) and `class_report.png` (precision/recall/F1 per class,
  support in the labels);
- token classification (NER): `entity_report.png` (entity-level precision/recall/F1 per type,
  support = true entities) and `confusion_matrix.png` of the word-level tags;
- language modelling: `perplexity.png` (validation perplexity, and exp of the smoothed train loss).

A confusion matrix whose true classes are imbalanced (IMBALANCED) shows each row as shares of its
class (rows sum to 1), the counts in the cells beside them. Legends sit below the panels, never
over the data.

A multi-task run (`task=multitask`): `curves.png` shows each task's own training loss (each batch
is one task's; recorded per task as it trains) and validation loss, the run's monitored metric
and the learning rate; `plots/<task>/` holds each task's pictures as a single-task run of its kind
has them, its `curves.png` with its own loss and its own monitored metric.

`plots.json` beside them holds the numbers each picture shows, keyed by the picture's path under
plots/ without ".png" ("curves", "<task>/confusion_matrix"). The numbers are computed here without
matplotlib; drawing imports it (headless Agg backend) only when a picture is written.

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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

PLOTS_DIR = "plots"
# A confusion matrix of C classes is C² counts: a 10,000-class run wrote a 701 MB plots.json, and
# built an 800 MB matrix at every validation. Up to MAX_CLASSES classes everything is kept; above,
# the MAX_CLASSES - 1 classes with the most validation examples, and one last row and column for
# all the others (the per-class report and its picture keep the same classes).
MAX_CLASSES = 30
# A confusion matrix is drawn row-normalised (each true class's row sums to 1) when its largest true
# class has more than IMBALANCED times the examples of its smallest (classes without any aside):
# drawn as counts, CoNLL's O tag (83% of the words) takes the whole colour scale and the rows of
# the entity tags look empty. Up to this ratio the rarest row still reaches a fifth of the scale.
IMBALANCED = 5.0
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


# A kind's own pictures (TaskModule.pictures): (prefix, curves' numbers, evals, metrics) -> {picture: numbers}
KindPictures = Callable[[str, dict, Any, dict], dict]


@dataclass
class TaskPlots:
    """What the pictures of one task of a multi-task run need besides the run's history."""

    pictures: KindPictures  # its module's `pictures`
    monitor: str  # its own monitored metric as a single-task run names it, e.g. "val/accuracy"
    diagnostics: dict[str, dict]  # its module's `latest_diagnostics`


def picture_data(kind_pictures: KindPictures | None, monitor: str, history, metrics: dict[str, float],
                 diagnostics: dict[str, dict], best: dict[str, Any] | None = None) -> dict[str, Any]:
    """What each picture of a single-task run shows: {picture name: its numbers}. `best`: the
    checkpoint the run keeps ({"checkpoint", "step", "monitor", "value"}), marked on the curves;
    `kind_pictures`: the task module's `pictures`."""
    train = [(step, loss) for step, loss, _ in history.train]
    data = task_pictures("", train, history.evals, metrics, diagnostics, monitor, best, kind_pictures)
    data["curves"]["lr"] = [lr for _, _, lr in history.train]
    return data


def multitask_picture_data(tasks: dict[str, TaskPlots], monitor: str, history, metrics: dict[str, float],
                           best: dict[str, Any] | None = None) -> dict[str, Any]:
    """What each picture of a multi-task run shows. `curves`: each task's own training loss
    (smoothed) and validation loss on one panel, the run's monitored metric and the learning rate;
    `<task>/<picture>`: each task's pictures as a single-task run of its kind has them, its curves
    drawn from its own training loss (`history.task_train`) and its `<task>/val/...` metrics."""
    steps, values = validations(history.evals, monitor)
    data: dict[str, Any] = {"curves": {
        "step": [s for s, _, _ in history.train], "lr": [lr for _, _, lr in history.train], "tasks": {},
        "monitor": monitor, "monitor_step": steps, "monitor_value": values, "best": best}}
    for name, task in tasks.items():
        train = [(step, loss) for step, trained, loss in history.task_train if trained == name]
        own = task_pictures(f"{name}/", train, history.evals, metrics, task.diagnostics,
                            f"{name}/{task.monitor}", best, task.pictures)
        data["curves"]["tasks"][name] = {k: own["curves"][k] for k in TASK_LOSS_KEYS}
        data.update({f"{name}/{picture}": numbers for picture, numbers in own.items()})
    return data


# What the run-level curves of a multi-task run show of each task (its own curves have the rest).
TASK_LOSS_KEYS = ("step", "train_loss_smoothed", "val_loss_step", "val_loss")


def task_pictures(prefix: str, train: list[tuple[int, float]], evals, metrics: dict[str, float],
                  diagnostics: dict[str, dict], monitor: str, best: dict[str, Any] | None,
                  kind_pictures: KindPictures | None = None) -> dict[str, Any]:
    """The pictures of one task: its `curves` (the training loss of `train`, [(step, loss)], the
    validation loss and `monitor` at every validation of `evals`), the confusion matrix when its
    module's diagnostics have one, and those its kind adds (`kind_pictures`: the task module's
    `pictures`). `prefix` starts the task's metric names: "" in a single-task run, "<task>/" in a
    multi-task one."""
    data: dict[str, Any] = {"curves": curves(train, evals, f"{prefix}val/loss", monitor, best)}
    val = diagnostics.get("val", {})  # the module's `diagnostics` of the validation set (`confusion`)
    if "confusion" in val:
        data["confusion_matrix"] = confusion_picture(val)
    if kind_pictures is not None:
        data.update(kind_pictures(prefix, data["curves"], evals, metrics))
    return data


def class_report_picture(val: dict[str, Any]) -> dict[str, dict[str, float]]:
    """The per-class report of a (bounded) confusion diagnostics: its folded last row left out."""
    labels = list(val["labels"])
    return class_report(np.asarray(val["confusion"]), labels[:-1] if "other" in val else labels)


def entity_picture(metrics: dict[str, float], eval_set: str) -> dict[str, dict[str, float]]:
    """The entity report of `eval_set`, bounded to the MAX_CLASSES types with the most true entities."""
    report = entity_report(metrics, eval_set)
    if len(report) > MAX_CLASSES:
        log.info("plots: entity report of the %d entity types with the most entities (of %d)", MAX_CLASSES,
                 len(report))
        top = sorted(report, key=lambda name: -report[name]["support"])[:MAX_CLASSES]
        report = {name: report[name] for name in report if name in top}
    return report


def perplexity_picture(curves_data: dict[str, Any], evals, metric: str) -> dict[str, Any]:
    """Validation perplexity (`metric`) at each validation, and exp of the smoothed training loss."""
    steps, values = validations(evals, metric)
    smoothed = curves_data["train_loss_smoothed"]
    return {"step": steps, "val_perplexity": values, "train_step": curves_data["step"],
            "train_perplexity_smoothed": [math.exp(min(v, 50.0)) for v in smoothed]}


def curves(train: list[tuple[int, float]], evals, loss: str, monitor: str, best: dict[str, Any] | None
           ) -> dict[str, Any]:
    """The training loss at every step of `train` (raw and smoothed), the validation loss (metric
    `loss`) and the `monitor`ed metric at every validation of `evals`, and the kept checkpoint."""
    losses = [value for _, value in train]
    val_steps, val_losses = validations(evals, loss)
    steps, values = validations(evals, monitor)
    return {"step": [s for s, _ in train], "train_loss": losses, "train_loss_smoothed": smooth(losses),
            "val_loss_step": val_steps, "val_loss": val_losses,
            "monitor": monitor, "monitor_step": steps, "monitor_value": values, "best": best}


def validations(evals, metric: str) -> tuple[list[int], list[float]]:
    """(steps, values) of `metric` at the validations of `evals` ([(step, metrics)]) that have it."""
    found = [(step, metrics[metric]) for step, metrics in evals if metric in metrics]
    return [step for step, _ in found], [value for _, value in found]


def confusion_picture(found: dict[str, Any]) -> dict[str, Any]:
    """The confusion matrix picture's numbers from a task's `confusion` diagnostics: the counts and,
    when the true classes are imbalanced (see IMBALANCED), each row divided by its class's support
    ("normalized_rows"; 0 for a class without examples), which the picture then shows."""
    counts, labels = np.asarray(found["confusion"]), list(found["labels"])
    data: dict[str, Any] = {"labels": labels, "counts": counts.tolist(), "what": found.get("what", "")}
    support = counts.sum(1)
    present = support[support > 0]
    if present.size and present.max() > IMBALANCED * present.min():
        data.update(support=support.tolist(), normalized_rows=(counts / np.maximum(support, 1)[:, None]).tolist(),
                    note=f"rows normalised: the true classes have {int(present.min())} to {int(present.max())} "
                         f"examples (more than {IMBALANCED:g}:1), so each row shows the shares of its class")
    if "other" in found:
        bounded = {"classes": int(found["classes"]), "other": int(found["other"]), "note": (
            f"{found['classes']} classes: the confusion matrix and the class report keep the {len(labels) - 1} "
            f"with the most validation examples; the matrix's last row and column count the other "
            f"{found['other']} (all of them would be {found['classes']}² counts)")}
        if "normalized_rows" in data:
            bounded["note"] += "; " + data["note"]
        data.update(bounded)
        log.info("plots: confusion matrix and class report of the %s", bounded["note"])
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
    """A matplotlib Figure for one picture of `picture_data` (`name` may start with "<task>/")."""
    import matplotlib

    task, _, picture = name.rpartition("/")
    title = f"{title}: {shown(task)}" if task else title
    with matplotlib.rc_context(PLAIN_TEXT):
        if picture in ("class_report", "entity_report"):
            what = "per-class report" if picture == "class_report" else "entity-level scores per type"
            return _draw_report(numbers, f"{title}\n{what}, validation")
        return {"curves": _draw_curves, "confusion_matrix": _draw_confusion,
                "perplexity": _draw_perplexity}[picture](numbers, title)


# Legends go below the panels, outside them (`_legend_below`): inside, `loc="best"` still lands
# on a curve or a bar whenever the data fill the panel.
def _legend_below(fig, handles: list, ncols: int = 3) -> None:
    fig.legend(handles=handles, loc="outside lower center", ncols=min(ncols, len(handles)) or 1, fontsize=8,
               frameon=False)


def _draw_curves(d: dict[str, Any], title: str):
    """Training and validation loss on one panel, the monitored metric, the learning rate (when
    `d` has it); the kept checkpoint's step as a dotted line on each, named in the legend."""
    plt = _pyplot()
    panels = 3 if "lr" in d else 2
    fig, axes = plt.subplots(1, panels, figsize=(4.2 * panels, 4.2), layout="constrained")
    loss_ax, metric_ax = axes[0], axes[1]
    if "tasks" in d:  # a multi-task run: each task's own losses, one colour per task
        for i, (name, task) in enumerate(d["tasks"].items()):
            color = f"C{i % 10}"
            loss_ax.plot(task["step"], task["train_loss_smoothed"], color=color,
                         label=f"{shown(name)}: train (smoothed)")
            loss_ax.plot(task["val_loss_step"], task["val_loss"], color=color, linestyle="--", marker="o", markersize=4,
                         label=f"{shown(name)}: validation")
    else:
        loss_ax.plot(d["step"], d["train_loss"], color="tab:blue", alpha=0.25, linewidth=0.8, label="train, per step")
        loss_ax.plot(d["step"], d["train_loss_smoothed"], color="tab:blue", label="train (smoothed)")
        loss_ax.plot(d["val_loss_step"], d["val_loss"], color="tab:red", marker="o", markersize=4, label="validation")
    loss_ax.set(title="loss", xlabel="step")
    metric_ax.plot(d["monitor_step"], d["monitor_value"], marker="o", color="tab:green")
    metric_ax.set(title=f"{d['monitor']} (validation)", xlabel="step")
    if not d["monitor_step"]:
        metric_ax.text(0.5, 0.5, "no validation ran", ha="center", va="center", transform=metric_ax.transAxes)
    if panels == 3:
        axes[2].plot(d["step"], d["lr"], color="tab:orange")
        axes[2].set(title="learning rate", xlabel="step")
        axes[2].ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    handles = loss_ax.get_legend_handles_labels()[0]
    best = d.get("best")
    if best:
        for ax in axes[:2]:
            line = ax.axvline(best["step"], color="0.35", linestyle=":", linewidth=1.2,
                              label=f"kept checkpoint ({best['checkpoint']}): step {best['step']}, "
                                    f"{best['monitor']} {best['value']:.4f}")
        handles.append(line)
        if best["step"] in d["monitor_step"]:  # this picture's metric where the kept weights were scored
            value = d["monitor_value"][d["monitor_step"].index(best["step"])]
            metric_ax.plot([best["step"]], [value], marker="*", markersize=13, color="tab:red", linestyle="none")
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    _legend_below(fig, handles, ncols=3 if "tasks" not in d else 2)
    return fig


def _draw_confusion(d: dict[str, Any], title: str):
    """Counts; or, for imbalanced classes (`confusion_picture`), each true class's row of shares,
    with its counts in the cells too."""
    plt = _pyplot()
    counts, labels = np.asarray(d["counts"]), [shown(name) for name in d["labels"]]
    normalized = "normalized_rows" in d
    values = np.asarray(d["normalized_rows"]) if normalized else counts
    size = min(3 + 0.45 * len(labels), 12)
    fig, ax = plt.subplots(figsize=(size + 1.2, size + 0.4), layout="constrained")
    image = ax.imshow(values, cmap="Blues", vmin=0, vmax=1.0 if normalized else None)
    bar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    bar.set_label("share of the true class (row sums to 1)" if normalized else "examples", fontsize=8)
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set(xlabel="predicted", ylabel="true")
    if len(labels) <= 20:  # numbers stay readable up to about this many classes
        threshold = values.max() / 2 if values.size else 0
        for (i, j), n in np.ndenumerate(counts):
            text = f"{values[i, j]:.2f}\n({n})" if normalized and n else str(n)
            ax.text(j, i, text, ha="center", va="center", fontsize=7 if normalized else 8,
                    color="white" if values[i, j] > threshold else "black")
    what = f"confusion matrix, validation ({d['what']})" if d.get("what") else "confusion matrix, validation"
    if normalized:
        what += "\nrows normalised: each true class's shares (counts in brackets)"
    ax.set_title(f"{title}\n{what}", fontsize=10)
    return fig


def _draw_report(report: dict[str, dict[str, float]], title: str):
    plt = _pyplot()
    names = list(report)
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(min(max(5, 1.1 * len(names) + 2), 3 + 0.75 * MAX_CLASSES), 4.0),
                           layout="constrained")
    for offset, (key, color) in zip((-0.27, 0, 0.27), (("precision", "tab:blue"), ("recall", "tab:orange"),
                                                          ("f1", "tab:green"))):
        values = [report[n][key] for n in names]
        bars = ax.bar(x + offset, values, width=0.27, label=key, color=color)
        ax.bar_label(bars, fmt="%.2f", fontsize=7, padding=1)
    ax.set_xticks(x, [f"{shown(n)}\n(n={report[n]['support']})" for n in names], fontsize=8)
    ax.set(ylim=(0, 1.1), ylabel="score")
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    _legend_below(fig, ax.get_legend_handles_labels()[0])
    return fig


def _draw_perplexity(d: dict[str, Any], title: str):
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.0), layout="constrained")
    ax.plot(d["train_step"], d["train_perplexity_smoothed"], color="tab:blue", alpha=0.6, label="train (smoothed)")
    ax.plot(d["step"], d["val_perplexity"], marker="o", color="tab:green", label="validation")
    ax.set(xlabel="step", ylabel="perplexity", yscale="log", title=f"{title}\nperplexity")
    ax.grid(alpha=0.3)
    _legend_below(fig, ax.get_legend_handles_labels()[0], ncols=2)
    return fig


def write_pictures(folder: Path, data: dict[str, Any], title: str) -> dict[str, Any]:
    """`<folder>/<name>.png` per picture and `plots.json`; returns {name: Figure} for the loggers
    (close them when done)."""
    plt = _pyplot()
    folder.mkdir(parents=True, exist_ok=True)
    figures = {}
    for name, numbers in data.items():  # "<task>/<picture>": under the task's own folder
        fig = draw(name, numbers, title)
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(folder / f"{name}.png", dpi=100)
        figures[name] = fig
    (folder / "plots.json").write_text(json.dumps(data, indent=1) + "\n")
    return figures


def close(figures: dict[str, Any]) -> None:
    plt = _pyplot()
    for fig in figures.values():
        plt.close(fig)
