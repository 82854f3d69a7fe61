"""Task kinds: for each, the HF head class, the LightningModule and the datamodule.

Adding a head kind = a datamodule subclass + a TaskModule subclass + one line here + a task YAML.
"""

from __future__ import annotations

from dataclasses import dataclass

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


@dataclass(frozen=True)
class TaskKind:
    head: type[PreTrainedModel]
    module: type[TaskModule]
    datamodule: type[TaskDataModule]


KINDS: dict[str, TaskKind] = {
    "seq_cls": TaskKind(GPT2ForSequenceClassification, SeqClsModule, SeqClsDataModule),
    "token_cls": TaskKind(GPT2ForTokenClassification, TokenClsModule, TokenClsDataModule),
    "qa": TaskKind(GPT2ForQuestionAnswering, QAModule, QADataModule),
    "lm": TaskKind(GPT2LMHeadModel, LanguageModelingModule, LanguageModelingDataModule),
    "mc": TaskKind(GPT2DoubleHeadsModel, MultipleChoiceModule, MultipleChoiceDataModule),
}
