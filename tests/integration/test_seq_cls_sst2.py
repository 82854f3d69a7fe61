"""Real data: GLUE SST-2 from ../shared/datasets with the real GPT-2 tokenizer (skips when absent)."""

import pytest

from gpt2tasks.train import train
from tests.conftest import shared_dataset


@pytest.mark.slow  # real data, tens of seconds; CI runs -m slow too (.ci/run)
def test_sst2_preset_on_local_glue_files(cfg_factory):
    tokenizer = shared_dataset("gpt2_tokenizer")
    train_file, dev_file = shared_dataset("sst2", "train.tsv"), shared_dataset("sst2", "dev.tsv")
    metrics = train(cfg_factory("task=sst2", "model=tiny", f"model.tokenizer_name_or_path={tokenizer}",
                                f"data.train_file={train_file}", f"data.validation_file={dev_file}",
                                "data.max_train_samples=6000", "trainer.max_epochs=2", "optim.lr=1e-3"))
    # All 872 dev sentences, a random-init 2-layer model, 2 x 6k examples (~30 s): ~0.74 measured.
    assert metrics["val/accuracy"] > 0.65
