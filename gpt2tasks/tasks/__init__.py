"""Task kinds: each is one registry entry carrying everything about it.

An entry names the HF head class, the LightningModule (metrics, eval options and the kind's own
config checks: `TaskModule.check_config` / `check_options`), the datamodule, and what an export
needs: the Hub pipeline tag, the class that loads the exported folder, whether `pipeline(...)`
can run it, and the tokenizer layout (`TOKENIZER_LAYOUTS`) that makes a plain tokenizer feed the
model what the datamodule fed it. Adding a head kind = one line here + a TaskModule subclass + a
datamodule subclass (+ their tests, and a task YAML to use it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from transformers import (GPT2DoubleHeadsModel, GPT2ForQuestionAnswering, GPT2ForSequenceClassification,
                          GPT2ForTokenClassification, GPT2LMHeadModel, PreTrainedModel)

from gpt2tasks.datamodules.base import TaskDataModule
from gpt2tasks.datamodules.lm import LanguageModelingDataModule
from gpt2tasks.datamodules.mc import MultipleChoiceDataModule
from gpt2tasks.datamodules.qa import QADataModule
from gpt2tasks.datamodules.seq_cls import SeqClsDataModule
from gpt2tasks.datamodules.token_cls import TokenClsDataModule
from gpt2tasks.tasks.base import TaskModule
from gpt2tasks.tasks.lm import LanguageModelingModule
from gpt2tasks.tasks.mc import MultipleChoiceModule
from gpt2tasks.tasks.qa import QAModule
from gpt2tasks.tasks.seq_cls import SeqClsModule
from gpt2tasks.tasks.token_cls import TokenClsModule

# How an export's tokenizer lays out its input (gpt2tasks.export.save_tokenizer implements them):
#   words: words split as add_prefix_space=True does; pair: a text pair joined by data.pair_separator
#   (when the task has one); question_context: question + separator + context + the summary eos;
#   bos: a prompt starts after an eos, as every training document does; plain: as the tokenizer is.
TOKENIZER_LAYOUTS = ("plain", "words", "pair", "question_context", "bos")


@dataclass(frozen=True)
class TaskKind:
    head: type[PreTrainedModel]
    module: type[TaskModule]
    datamodule: type[TaskDataModule]
    pipeline_tag: str  # the Hub's task name (model card)
    auto_class: str  # the transformers class that loads the exported folder
    pipeline: bool  # whether transformers' pipeline(pipeline_tag) runs the export (tests/unit/test_compat.py checks)
    tokenizer_layout: str  # one of TOKENIZER_LAYOUTS

    def options(self, task: Any) -> dict[str, Any]:
        """The kind's evaluation options (e.g. task.tag_scheme) from a task: block, defaults filled in."""
        from omegaconf import OmegaConf

        values = OmegaConf.to_container(task, resolve=True) if OmegaConf.is_config(task) else dict(task)
        return {key: values.get(key, default) for key, default in self.module.eval_options.items()}

    def problems(self, task: Any, data: Any) -> list[str]:
        """The kind's own checks of a task's task: and data: blocks (one message per problem)."""
        return self.module.check_options(self.options(task)) + self.module.check_config(task, data)


KINDS: dict[str, TaskKind] = {
    "seq_cls": TaskKind(GPT2ForSequenceClassification, SeqClsModule, SeqClsDataModule,
                        "text-classification", "AutoModelForSequenceClassification", True, "pair"),
    "token_cls": TaskKind(GPT2ForTokenClassification, TokenClsModule, TokenClsDataModule,
                          "token-classification", "AutoModelForTokenClassification", True, "words"),
    # transformers 5 has no question-answering pipeline (the Hub tag stays): the card loads the model
    "qa": TaskKind(GPT2ForQuestionAnswering, QAModule, QADataModule,
                   "question-answering", "AutoModelForQuestionAnswering", False, "question_context"),
    "lm": TaskKind(GPT2LMHeadModel, LanguageModelingModule, LanguageModelingDataModule,
                   "text-generation", "AutoModelForCausalLM", True, "bos"),
    "mc": TaskKind(GPT2DoubleHeadsModel, MultipleChoiceModule, MultipleChoiceDataModule,
                   "multiple-choice", "GPT2DoubleHeadsModel", False, "plain"),
}
