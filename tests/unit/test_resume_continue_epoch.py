"""ContinueEpoch: a resumed epoch yields exactly the batches the interrupted epoch had not trained on,
for any sampler that is deterministic given set_epoch."""

from lightning.fabric.utilities.data import _set_sampler_epoch
from torch.utils.data import DataLoader

from gpt2tasks.datamodules.batching import LengthGroupedSampler, RankBatchSampler
from gpt2tasks.resume import continue_epochs

ROWS = list(range(40))


def _loader(position):
    sampler = LengthGroupedSampler([i % 7 + 1 for i in ROWS], 4, shuffle=True, seed=3)
    return continue_epochs(DataLoader(ROWS, batch_sampler=RankBatchSampler(sampler), collate_fn=list), position)


def test_skips_the_batches_already_trained_and_keeps_the_epoch_order():
    loader = _loader(lambda: (0, 0))
    epochs = []
    for epoch in (0, 1):
        _set_sampler_epoch(loader, epoch)  # what Lightning does before each epoch
        epochs.append(list(loader))
    assert epochs[0] != epochs[1] and len(loader) == 10
    # a new process resuming epoch 1 after 3 batches; the epoch is set by the sampler itself when its
    # iteration starts before Lightning's set_epoch (DataLoader workers draw indices at once)
    assert list(_loader(lambda: (1, 3))) == epochs[1][3:]
    assert list(_loader(lambda: (1, 10))) == []  # the epoch was complete: Lightning starts the next


def test_a_sampler_yielding_whole_batches():
    class Batches:  # e.g. DataLoader(sampler=..., batch_size=None)
        epoch = 0

        def set_epoch(self, epoch):
            self.epoch = epoch

        def __iter__(self):
            return iter([[self.epoch, i] for i in range(5)])

        def __len__(self):
            return 5

    class Rows:
        def __getitem__(self, key):
            return key

        def __len__(self):
            return 10

    position = {"now": (0, 0)}
    loader = continue_epochs(DataLoader(Rows(), sampler=Batches(), batch_size=None), lambda: position["now"])
    _set_sampler_epoch(loader, 2)
    position["now"] = (2, 2)
    assert [[int(x) for x in b] for b in loader] == [[2, 2], [2, 3], [2, 4]]


def test_each_rank_resumes_with_its_own_rng_states_on_as_many_processes():
    # ranks draw different amounts of dropout noise (their batches' shapes differ): a checkpoint of
    # 2 processes holds both ranks' states; on another number of processes every rank takes rank 0's
    from types import SimpleNamespace

    from gpt2tasks.resume import ResumeExactly

    saved = {"gpt2tasks": {"rng": "rank 0", "rng_by_rank": ["rank 0", "rank 1"]}}
    older = {"gpt2tasks": {"rng": "rank 0"}}  # written before every rank's states were kept
    for checkpoint, rank, world, expected in [(saved, 0, 2, "rank 0"), (saved, 1, 2, "rank 1"),
                                              (saved, 0, 1, "rank 0"), (saved, 2, 3, "rank 0"),
                                              (older, 1, 2, "rank 0")]:
        callback = ResumeExactly()
        trainer = SimpleNamespace(state=SimpleNamespace(fn="fit"), global_rank=rank, world_size=world)
        callback.on_load_checkpoint(trainer, None, checkpoint)
        assert callback._rng == expected, (rank, world)
