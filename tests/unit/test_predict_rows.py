"""Each kind's `predict_rows` on hand-made outputs: the fields of the JSON lines, for the cases the
bundled samples do not reach (multi-label, regression, SQuAD v2's no answer)."""

from types import SimpleNamespace

import numpy as np
import pytest
from transformers import GPT2Config, GPT2ForQuestionAnswering, GPT2ForSequenceClassification

from gpt2tasks.datamodules.base import PREDICT
from gpt2tasks.datamodules.labels import MULTI, REGRESSION, SINGLE, LabelSpace
from gpt2tasks.tasks.base import EvalSpec, OptimSpec
from gpt2tasks.tasks.qa import QAModule
from gpt2tasks.tasks.seq_cls import SeqClsModule

TINY = dict(n_layer=1, n_head=1, n_embd=8, vocab_size=16, n_positions=16)


def seq_cls(problem_type: str, names: list[str]):
    space = LabelSpace(problem_type, names)
    config = GPT2Config(**TINY, num_labels=space.num_labels, problem_type=problem_type)
    module = SeqClsModule(GPT2ForSequenceClassification(config), OptimSpec(), EvalSpec())
    return module, SimpleNamespace(label_space=space)


def test_seq_cls_rows_per_problem_type():
    module, dm = seq_cls(SINGLE, ["neg", "pos"])
    [row] = module.predict_rows({"logits": np.array([[0.0, np.log(3.0)]], dtype=np.float32)}, dm)
    assert row["label"] == "pos" and row["scores"] == pytest.approx({"neg": 0.25, "pos": 0.75})
    module, dm = seq_cls(MULTI, ["a", "b", "c"])
    [row] = module.predict_rows({"logits": np.array([[2.0, -2.0, 0.1]], dtype=np.float32)}, dm)
    assert row["labels"] == ["a", "c"] and row["scores"]["b"] == pytest.approx(1 / (1 + np.exp(2.0)))
    module, dm = seq_cls(REGRESSION, [])
    assert module.predict_rows({"logits": np.array([[3.5], [-1.25]], dtype=np.float32)}, dm) == [
        {"value": 3.5}, {"value": -1.25}]


@pytest.mark.parametrize("version_2", [False, True])
def test_qa_rows_give_offsets_or_the_v2_null_answer(version_2):
    context = "Paris is big."
    options = {"version_2": version_2, "n_best": 20, "max_answer_length": 30, "null_threshold": 0.0}
    module = QAModule(GPT2ForQuestionAnswering(GPT2Config(**TINY, num_labels=2)), OptimSpec(),
                      EvalSpec(metrics=["f1"], options=options))
    # one window: a question token, "Paris", " is", " big.", the summary token (no answer's position)
    window = {"example": 0, "offset_start": [-1, 0, 6, 9, -1], "offset_end": [-1, 5, 8, 13, -1]}
    dm = SimpleNamespace(datasets={PREDICT: SimpleNamespace(rows=[window])},
                         contexts=lambda split: (["q1"], [context]))
    outputs = {"idx": np.array([0]), "start_logits": np.array([[0.0, 3.0, 0.0, 0.0, 9.0]]),
               "end_logits": np.array([[0.0, 2.0, 0.0, 0.0, 9.0]])}
    [row] = module.predict_rows(outputs, dm)
    if version_2:  # null score 18 beats the best span's 5
        assert row == {"answer": "", "score": 18.0, "start": None, "end": None}
    else:
        assert row == {"answer": "Paris", "score": 5.0, "start": 0, "end": 5}
        assert context[row["start"]:row["end"]] == row["answer"]
