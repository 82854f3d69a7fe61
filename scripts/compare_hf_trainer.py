"""Score parity check: gpt2tasks vs a plain Hugging Face `Trainer` pipeline on the same run.

    python scripts/compare_hf_trainer.py --kind seq_cls     # bundled sentiment sample, accuracy
    python scripts/compare_hf_trainer.py --kind token_cls   # bundled NER sample, entity F1
    python scripts/compare_hf_trainer.py --kind qa          # bundled QA sample, SQuAD F1
    python scripts/compare_hf_trainer.py --kind mc          # bundled multiple-choice sample, accuracy
    python scripts/compare_hf_trainer.py --kind lm          # bundled text sample, perplexity
    python scripts/compare_hf_trainer.py --kind qa --train-file train.jsonl --validation-file dev.jsonl --model-dir DIR

Both sides get the same local GPT-2 checkpoint, files, steps, batch size, learning rate (linear
decay, warmup ratio, weight decay off biases/LayerNorms, clipping 1.0), seed and preprocessing
choices; the Trainer side is written the way the Hugging Face examples (run_glue / run_ner /
run_qa) do it, adapted to GPT-2 only where GPT-2 requires it (pad = eos, prefix space for
pre-split words, question before context, the last token as the no-answer position). Scores
are computed on the validation file: accuracy, seqeval entity F1 (gpt2tasks.tasks.token_cls, equal
to seqeval), SQuAD F1 (official normalisation).

Without --model-dir a random-init tiny GPT-2 (2 layers, 128 wide, the bundled tokenizer) is saved
to a temporary folder first, as a user's local checkpoint would be. Training a small random-init
model can be chaotic (the same recipe swings by points between seeds for both systems), so pass
several --seeds: the table then shows each seed and the mean.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "data"

# Per kind: the gpt2tasks preset, its bundled files, the score reported, and the recipe defaults
# (those of the preset, so `--kind X` alone compares the run a user gets from `task=<preset>`).
KINDS = {
    "seq_cls": dict(preset="text_classification", train=DATA / "sample_sentiment/train.csv",
                    validation=DATA / "sample_sentiment/validation.csv", metric="accuracy",
                    steps=600, batch_size=32, max_length=128, lr=1e-3, warmup_ratio=0.0, weight_decay=0.0),
    "token_cls": dict(preset="token_classification", train=DATA / "sample_ner/train.jsonl",
                      validation=DATA / "sample_ner/validation.jsonl", metric="f1",
                      steps=600, batch_size=32, max_length=128, lr=1e-3, warmup_ratio=0.1, weight_decay=0.01),
    "qa": dict(preset="question_answering", train=DATA / "sample_qa/train.jsonl",
               validation=DATA / "sample_qa/validation.jsonl", metric="f1",
               steps=600, batch_size=32, max_length=128, lr=1e-3, warmup_ratio=0.1, weight_decay=0.01),
    "mc": dict(preset="multiple_choice", train=DATA / "sample_mc/train.jsonl",
               validation=DATA / "sample_mc/validation.jsonl", metric="accuracy",
               steps=500, batch_size=32, max_length=48, lr=1e-3, warmup_ratio=0.1, weight_decay=0.01),
    "lm": dict(preset="language_modeling", train=DATA / "sample_lm/train.txt",
               validation=DATA / "sample_lm/validation.txt", metric="perplexity",
               steps=300, batch_size=16, max_length=128, lr=2e-3, warmup_ratio=0.1, weight_decay=0.01),
}


def make_tiny_checkpoint(path: Path, seed: int) -> None:
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    tok = AutoTokenizer.from_pretrained(DATA / "tokenizer")
    torch.manual_seed(seed)
    config = GPT2Config(n_layer=2, n_head=4, n_embd=128, vocab_size=len(tok), eos_token_id=tok.eos_token_id,
                        bos_token_id=tok.eos_token_id)
    GPT2LMHeadModel(config).save_pretrained(path)
    tok.save_pretrained(path)


def read_rows(path: str) -> list[dict]:
    if path.endswith((".csv", ".tsv")):
        with open(path, newline="", encoding="utf-8") as f:
            tsv = path.endswith(".tsv")  # GLUE TSVs: tab-separated, quotes are plain text
            return list(csv.DictReader(f, delimiter="\t" if tsv else ",",
                                       quoting=csv.QUOTE_NONE if tsv else csv.QUOTE_MINIMAL))
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


# Optional fields of `args` that scripts/bench.py sets (this script's own runs leave them unset):
#   gpt2tasks side: model_overrides (replace model.name_or_path=<model_dir>), callbacks (Lightning);
#   Trainer side: init_from_config (random init from model_dir's config.json, seeded, instead of its
#   weights), use_cpu, training_args (extra TrainingArguments), hf_callbacks, static_padding (pad
#   every batch to max_length), wrap_collator (a function applied to the data collator).


# ---- gpt2tasks ----------------------------------------------------------------------------------
def run_gpt2tasks(args, model_dir: Path, out: Path) -> tuple[float, float]:
    from hydra import compose, initialize_config_dir

    from gpt2tasks.resources import CONF_DIR, register_resolvers
    from gpt2tasks.train import train

    kind = KINDS[args.kind]
    columns = {"seq_cls": [f"data.text_column={args.text_column}", f"data.label_column={args.label_column}"],
               "token_cls": [f"data.tokens_column={args.tokens_column}", f"data.tags_column={args.tags_column}"],
               "qa": [f"data.doc_stride={args.doc_stride}", f"data.max_question_length={args.max_question_length}"],
               # the sample's endings continue the context's last words: one running text
               "mc": ["data.pair_separator=' '"],
               "lm": [f"data.block_size={args.max_length}", "task.sample_prompts=[]"]}
    register_resolvers()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[
            f"task={kind['preset']}", *getattr(args, "model_overrides", [f"model.name_or_path={model_dir}"]),
            f"data.train_file={args.train_file}",
            f"data.validation_file={args.validation_file}", *columns[args.kind],
            f"data.batch_size={args.batch_size}", f"data.max_length={args.max_length}", f"optim.lr={args.lr}",
            f"optim.warmup_ratio={args.warmup_ratio}", f"optim.weight_decay={args.weight_decay}",
            f"trainer.max_steps={args.steps}", "trainer.max_epochs=-1", f"trainer.val_check_interval={args.steps}",
            "trainer.check_val_every_n_epoch=null", f"seed={args.seed}", "logger=none",
            "trainer.enable_progress_bar=false", "trainer.accelerator=cpu", f"output_dir={out}", *args.override,
            *(["+model.config_overrides={resid_pdrop: 0.0, embd_pdrop: 0.0, attn_pdrop: 0.0}"] if args.no_dropout else [])])
    start = time.perf_counter()
    metrics = train(cfg, callbacks=getattr(args, "callbacks", ()))
    score = metrics[f"val/{kind['metric']}"]
    # SQuAD EM/F1 are reported in points (0-100); the table compares fractions, as for the others.
    return score / 100 if args.kind == "qa" else score, time.perf_counter() - start


# ---- plain Hugging Face Trainer -------------------------------------------------------------------
def hf_train(args, model_class, model_dir: Path, out: Path, train_dataset, collator, trainer_class=None,
             **model_kwargs):
    """Train `model_class` from `model_dir` with a plain `Trainer`; returns (trainer, seconds)."""
    from transformers import Trainer, TrainingArguments, set_seed

    trainer_class = trainer_class or Trainer
    set_seed(args.seed)
    dropout = dict.fromkeys(("resid_pdrop", "embd_pdrop", "attn_pdrop"), 0.0) if args.no_dropout else {}
    if getattr(args, "init_from_config", False):
        from transformers import AutoConfig

        model = model_class(AutoConfig.from_pretrained(model_dir, **model_kwargs, **dropout))
    else:
        model = model_class.from_pretrained(model_dir, **model_kwargs, **dropout)
    model.config.pad_token_id = model.config.eos_token_id
    training_args = TrainingArguments(
        output_dir=str(out), per_device_train_batch_size=args.batch_size, per_device_eval_batch_size=64,
        learning_rate=args.lr, max_steps=args.steps, lr_scheduler_type="linear",
        # transformers 5 folds warmup_ratio into warmup_steps; whole steps, rounded as gpt2tasks does
        warmup_steps=int(args.warmup_ratio * args.steps),
        weight_decay=args.weight_decay, max_grad_norm=1.0, seed=args.seed, report_to=[], save_strategy="no",
        eval_strategy="no", use_cpu=getattr(args, "use_cpu", True), disable_tqdm=True, logging_steps=50,
        **getattr(args, "training_args", {}))
    collator = getattr(args, "wrap_collator", lambda c: c)(collator)
    if getattr(args, "same_batches", False):
        trainer_class = same_batches(trainer_class, [len(ids) for ids in train_dataset["input_ids"]], args)
    trainer = trainer_class(model=model, args=training_args, train_dataset=train_dataset, data_collator=collator,
                            callbacks=getattr(args, "hf_callbacks", None))
    start = time.perf_counter()
    trainer.train()
    return trainer, time.perf_counter() - start


def same_batches(trainer_class, lengths: list[int], args):
    """`--same-batches`: the Trainer reads its rows in gpt2tasks' order (length-grouped, shuffled per
    epoch from the seed): with identical rows, both sides see identical batches, so what is left to
    differ is the framework (and the new head's random init)."""
    from gpt2tasks.datamodules.batching import LengthGroupedSampler

    class SameBatches(trainer_class):
        def _get_train_sampler(self, train_dataset=None):
            # its flat index stream re-chunked by batch_size gives exactly gpt2tasks' batches
            return LengthGroupedSampler(lengths, args.batch_size, shuffle=True, seed=args.seed)

    return SameBatches


def padding(args) -> dict:
    """Collator padding: per batch (default), or every batch to max_length (`static_padding`)."""
    return {"padding": "max_length", "max_length": args.max_length} if getattr(args, "static_padding", False) else {}


def hf_tokenizer(model_dir: Path, **kwargs):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir, **kwargs)
    tok.pad_token = tok.eos_token  # GPT-2 has no pad token; padded positions are masked anyway
    return tok


def hf_seq_cls(args, model_dir: Path, out: Path) -> tuple[float, float]:
    from datasets import Dataset
    from transformers import DataCollatorWithPadding, GPT2ForSequenceClassification

    train_rows, val_rows = read_rows(args.train_file), read_rows(args.validation_file)
    label2id = {c: i for i, c in enumerate(sorted({r[args.label_column] for r in train_rows}))}
    tok = hf_tokenizer(model_dir)

    def encode(rows):
        enc = tok([r[args.text_column] for r in rows], truncation=True, max_length=args.max_length)
        return Dataset.from_dict({**enc, "labels": [label2id[r[args.label_column]] for r in rows]})

    trainer, seconds = hf_train(args, GPT2ForSequenceClassification, model_dir, out, encode(train_rows),
                                DataCollatorWithPadding(tok, **padding(args)), num_labels=len(label2id))
    pred = trainer.predict(encode(val_rows))  # predictions come back in dataset order
    return float(np.mean(pred.predictions.argmax(-1) == pred.label_ids)), seconds


def hf_token_cls(args, model_dir: Path, out: Path) -> tuple[float, float]:
    from datasets import Dataset
    from transformers import DataCollatorForTokenClassification, GPT2ForTokenClassification

    from gpt2tasks.tasks.token_cls import ner_metrics

    train_rows, val_rows = read_rows(args.train_file), read_rows(args.validation_file)
    names = sorted({t for r in train_rows for t in r[args.tags_column]})
    label2id = {n: i for i, n in enumerate(names)}
    tok = hf_tokenizer(model_dir, add_prefix_space=True)  # required for is_split_into_words with GPT-2

    def encode(rows):
        """run_ner style: label the first sub-token of each word, -100 elsewhere."""
        enc = tok([r[args.tokens_column] for r in rows], is_split_into_words=True, truncation=True,
                  max_length=args.max_length)
        labels, word_ids = [], []
        for i, row in enumerate(rows):
            ids, previous, tags = enc.word_ids(i), None, []
            for w in ids:
                tags.append(-100 if w is None or w == previous else label2id[row[args.tags_column][w]])
                previous = w
            labels.append(tags)
            word_ids.append(ids)
        return Dataset.from_dict({**enc, "labels": labels}), word_ids

    train_set, _ = encode(train_rows)
    trainer, seconds = hf_train(args, GPT2ForTokenClassification, model_dir, out, train_set,
                                DataCollatorForTokenClassification(tok, **padding(args)), num_labels=len(names),
                                id2label=dict(enumerate(names)), label2id=label2id)
    val_set, word_ids = encode(val_rows)
    logits = trainer.predict(val_set).predictions  # (N, T_max, C), in dataset order
    true, pred, cut = [], [], 0
    for i, row in enumerate(val_rows):
        tags = ["O"] * len(row[args.tokens_column])  # words cut off by truncation stay "O"
        for t, w in enumerate(word_ids[i]):
            if w is not None and (t == 0 or word_ids[i][t - 1] != w):
                tags[w] = names[int(logits[i, t].argmax())]
        cut += len(tags) - len({w for w in word_ids[i] if w is not None})
        true.append([str(t) for t in row[args.tags_column]])
        pred.append(tags)
    if cut:
        print(f"HF side: {cut} validation words truncated away (raise --max-length for a like-for-like run)")
    return ner_metrics(true, pred, per_type=False)["f1"], seconds


def hf_qa(args, model_dir: Path, out: Path) -> tuple[float, float]:
    import torch
    import torch.nn.functional as F
    from datasets import Dataset
    from transformers import DataCollatorWithPadding, GPT2ForQuestionAnswering, Trainer

    from gpt2tasks.tasks.qa import squad_metrics

    train_rows, val_rows = read_rows(args.train_file), read_rows(args.validation_file)
    tok = hf_tokenizer(model_dir)
    eos = tok.eos_token_id

    def features(rows):
        """run_qa style windows: question + eos separator, then a context slice (stride overlap),
        plus a final eos that is the no-answer position (it is the only token that has seen all)."""
        questions = [tok.decode(tok(r["question"])["input_ids"][:args.max_question_length]) + tok.eos_token
                     for r in rows]
        enc = tok(questions, [r["context"] for r in rows], truncation="only_second",
                  max_length=args.max_length - 1, stride=args.doc_stride, return_overflowing_tokens=True,
                  return_offsets_mapping=True)
        cols = {"input_ids": [], "start_positions": [], "end_positions": []}
        offsets, examples = [], []
        for f, ids in enumerate(enc["input_ids"]):
            example = enc["overflow_to_sample_mapping"][f]
            context = [t for t, s in enumerate(enc.sequence_ids(f)) if s == 1]
            span = [o if s == 1 else None for o, s in zip(enc["offset_mapping"][f], enc.sequence_ids(f))]
            null = len(ids)
            start = end = null
            answers = rows[example]["answers"]
            if answers["text"]:
                a, b = answers["answer_start"][0], answers["answer_start"][0] + len(answers["text"][0])
                first, last = context[0], context[-1]
                if span[first][0] <= a and span[last][1] >= b:  # answer inside this window
                    while first <= last and span[first][0] <= a:
                        first += 1
                    while last >= context[0] and span[last][1] >= b:
                        last -= 1
                    start, end = first - 1, last + 1
            cols["input_ids"].append(ids + [eos])
            cols["start_positions"].append(start)
            cols["end_positions"].append(end)
            offsets.append(span + [None])
            examples.append(example)
        return Dataset.from_dict(cols), offsets, examples

    class MaskedQATrainer(Trainer):
        """GPT2ForQuestionAnswering's own loss lets padding positions compete in the start/end softmax,
        so it depends on how much padding a batch holds; gpt2tasks masks them (a span can never start
        on padding). Same choice here, so the two pipelines differ only in the framework."""

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            start, end = inputs.pop("start_positions"), inputs.pop("end_positions")
            outputs = model(**inputs)
            padding = inputs["attention_mask"] == 0
            loss = (F.cross_entropy(outputs.start_logits.float().masked_fill(padding, -torch.inf), start)
                    + F.cross_entropy(outputs.end_logits.float().masked_fill(padding, -torch.inf), end)) / 2
            return (loss, outputs) if return_outputs else loss

    train_set, _, _ = features(train_rows)
    trainer, seconds = hf_train(args, GPT2ForQuestionAnswering, model_dir, out, train_set,
                                DataCollatorWithPadding(tok, **padding(args)),
                                trainer_class=None if args.hf_qa_loss == "hf" else MaskedQATrainer)
    val_set, offsets, examples = features(val_rows)
    start_logits, end_logits = trainer.predict(val_set).predictions[:2]
    # utils_qa.postprocess_qa_predictions (v1.1): best n_best start x end over all windows of an example
    best: dict[int, tuple[float, str]] = {}
    for f, example in enumerate(examples):
        context = val_rows[example]["context"]
        n = len(offsets[f])
        starts = np.argsort(start_logits[f][:n])[::-1][:args.n_best]
        ends = np.argsort(end_logits[f][:n])[::-1][:args.n_best]
        for s in starts:
            for e in ends:
                if offsets[f][s] is None or offsets[f][e] is None or e < s or e - s + 1 > args.max_answer_length:
                    continue
                score = float(start_logits[f][s] + end_logits[f][e])
                if example not in best or score > best[example][0]:
                    best[example] = (score, context[offsets[f][s][0]:offsets[f][e][1]])
    predictions = [best.get(i, (0.0, ""))[1] for i in range(len(val_rows))]
    references = [r["answers"]["text"] for r in val_rows]
    return squad_metrics(predictions, references)["f1"] / 100, seconds


def hf_mc(args, model_dir: Path, out: Path) -> tuple[float, float]:
    """run_swag style over GPT2DoubleHeadsModel. Plain `Trainer` cannot train it as is: the model's
    `loss` is the LM loss (None without LM labels) and the choice loss is `mc_loss`, so the one
    change is a compute_loss that returns mc_loss."""
    import torch
    from datasets import Dataset
    from transformers import GPT2DoubleHeadsModel, Trainer

    train_rows, val_rows = read_rows(args.train_file), read_rows(args.validation_file)
    tok = hf_tokenizer(model_dir)

    def encode(rows):
        """Each choice: context + " " + ending + eos, the context's start cut first when too long."""
        choices = []
        for r in rows:
            context = tok(r["context"], add_special_tokens=False)["input_ids"]
            row = []
            for ending in r["endings"]:
                tail = tok(" " + ending, add_special_tokens=False)["input_ids"][:args.max_length - 1]
                room = args.max_length - 1 - len(tail)
                row.append(context[max(len(context) - room, 0):] + tail + [tok.eos_token_id])
            choices.append(row)
        return Dataset.from_dict({"input_ids": choices, "mc_labels": [int(r["label"]) for r in rows]})

    def collate(features):
        longest = max(len(c) for f in features for c in f["input_ids"])
        n = len(features[0]["input_ids"])
        ids = torch.full((len(features), n, longest), tok.eos_token_id)
        mask = torch.zeros_like(ids)
        for i, f in enumerate(features):
            for c, seq in enumerate(f["input_ids"]):
                ids[i, c, :len(seq)] = torch.tensor(seq)
                mask[i, c, :len(seq)] = 1
        return {"input_ids": ids, "attention_mask": mask, "mc_token_ids": mask.sum(-1) - 1,
                "mc_labels": torch.tensor([f["mc_labels"] for f in features])}

    class ChoiceTrainer(Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            outputs = model(**inputs)
            return (outputs.mc_loss, outputs) if return_outputs else outputs.mc_loss

    trainer, seconds = hf_train(args, GPT2DoubleHeadsModel, model_dir, out, encode(train_rows), collate,
                                trainer_class=ChoiceTrainer)
    model, val_set = trainer.model.eval(), encode(val_rows)
    correct = 0
    with torch.no_grad():
        for start in range(0, len(val_set), 64):
            batch = collate([val_set[i] for i in range(start, min(start + 64, len(val_set)))])
            labels = batch.pop("mc_labels").to(model.device)
            batch = {k: v.to(model.device) for k, v in batch.items()}
            correct += int((model(**batch).mc_logits.argmax(-1) == labels).sum())
    return correct / len(val_set), seconds


def hf_lm(args, model_dir: Path, out: Path) -> tuple[float, float]:
    """run_clm style: documents + eos, concatenated, cut into blocks (training drops the last
    partial block, as run_clm does). Perplexity is exact over all validation tokens, partial
    block included, as gpt2tasks computes it."""
    import math

    import torch
    from datasets import Dataset
    from transformers import GPT2LMHeadModel, default_data_collator

    tok = hf_tokenizer(model_dir)

    def blocks(path, keep_last):
        stream = []
        for line in Path(path).read_text(encoding="utf-8").splitlines():
            if line.strip():
                stream += tok(line, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        size = args.max_length
        cut = [stream[i:i + size] for i in range(0, len(stream), size)]
        return cut if keep_last or len(cut[-1]) == size else cut[:-1]

    train_blocks = blocks(args.train_file, keep_last=False)
    train_set = Dataset.from_dict({"input_ids": train_blocks, "labels": train_blocks})
    trainer, seconds = hf_train(args, GPT2LMHeadModel, model_dir, out, train_set, default_data_collator)
    model, nll, count = trainer.model.eval(), 0.0, 0
    with torch.no_grad():
        for block in blocks(args.validation_file, keep_last=True):
            ids = torch.tensor([block], device=model.device)
            nll += float(model(input_ids=ids, labels=ids).loss) * (len(block) - 1)
            count += len(block) - 1
    return math.exp(nll / count), seconds


HF_RUNS = {"seq_cls": hf_seq_cls, "token_cls": hf_token_cls, "qa": hf_qa, "mc": hf_mc, "lm": hf_lm}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", choices=sorted(KINDS), default="seq_cls")
    parser.add_argument("--train-file")
    parser.add_argument("--validation-file")
    parser.add_argument("--model-dir", type=Path)
    for name in ("steps", "batch_size", "max_length"):
        parser.add_argument(f"--{name.replace('_', '-')}", type=int)
    for name in ("lr", "warmup_ratio", "weight_decay"):
        parser.add_argument(f"--{name.replace('_', '-')}", type=float)
    parser.add_argument("--text-column", default="text")
    parser.add_argument("--label-column", default="label")
    parser.add_argument("--tokens-column", default="tokens")
    parser.add_argument("--tags-column", default="ner_tags")
    parser.add_argument("--doc-stride", type=int, default=32)
    parser.add_argument("--max-question-length", type=int, default=32)
    parser.add_argument("--n-best", type=int, default=20)
    parser.add_argument("--max-answer-length", type=int, default=30)
    parser.add_argument("--hf-qa-loss", choices=["masked", "hf"], default="masked",
                        help="QA Trainer loss: padding masked out of the softmax as gpt2tasks does (default), "
                             "or GPT2ForQuestionAnswering's own loss over every position")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--seeds", type=int, nargs="*", help="several seeds: per-seed rows and mean ± sd")
    parser.add_argument("--override", nargs="*", default=[], help="extra gpt2tasks overrides (key=value)")
    parser.add_argument("--no-dropout", action="store_true", help="dropout 0 in both (isolates RNG streams)")
    parser.add_argument("--skip-hf", action="store_true", help="only run gpt2tasks (for quick experiments)")
    parser.add_argument("--same-batches", action="store_true",
                        help="the Trainer reads rows in gpt2tasks' length-grouped order (identical batches)")
    args = parser.parse_args()
    kind = KINDS[args.kind]
    for name in ("train", "validation"):
        if getattr(args, f"{name}_file") is None:
            setattr(args, f"{name}_file", str(kind[name]))
    for name in ("steps", "batch_size", "max_length", "lr", "warmup_ratio", "weight_decay"):
        if getattr(args, name) is None:
            setattr(args, name, kind[name])
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    rows = []
    for seed in args.seeds or [args.seed]:
        args.seed = seed
        with tempfile.TemporaryDirectory() as tmp:
            model_dir = args.model_dir or Path(tmp) / "tiny_gpt2"
            if args.model_dir is None:
                make_tiny_checkpoint(model_dir, seed)
            ours, ours_s = run_gpt2tasks(args, model_dir, Path(tmp) / "gpt2tasks_run")
            theirs, theirs_s = ((float("nan"), 0.0) if args.skip_hf
                                else HF_RUNS[args.kind](args, model_dir, Path(tmp) / "hf_run"))
        rows.append((seed, ours, theirs, ours_s, theirs_s))
        print(f"seed {seed}: gpt2tasks {ours:.4f}  HF Trainer {theirs:.4f}", flush=True)

    metric = kind["metric"]
    print(f"\n{args.kind} ({Path(args.train_file).parent.name}), {args.steps} steps, batch {args.batch_size}, "
          f"lr {args.lr}, warmup {args.warmup_ratio}, weight decay {args.weight_decay}\n"
          f"| seed | gpt2tasks val {metric} | HF Trainer val {metric} | difference | gpt2tasks s | HF s |\n"
          "|---|---|---|---|---|---|")
    def difference(ours, theirs):  # perplexity: relative; scores in [0, 1]: points
        return f"{100 * (ours / theirs - 1):+.2f}%" if metric == "perplexity" else f"{100 * (ours - theirs):+.2f}"

    for seed, ours, theirs, ours_s, theirs_s in rows:
        print(f"| {seed} | {ours:.4f} | {theirs:.4f} | {difference(ours, theirs)} | {ours_s:.1f} | {theirs_s:.1f} |")
    if len(rows) > 1:
        ours_all, theirs_all = [r[1] for r in rows], [r[2] for r in rows]
        print(f"| mean ± sd | {statistics.mean(ours_all):.4f} ± {statistics.stdev(ours_all):.4f} | "
              f"{statistics.mean(theirs_all):.4f} ± {statistics.stdev(theirs_all):.4f} | "
              f"{difference(statistics.mean(ours_all), statistics.mean(theirs_all))} | | |")


if __name__ == "__main__":
    main()
