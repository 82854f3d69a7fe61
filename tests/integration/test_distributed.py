"""Two real processes on CPU (gloo): training runs as a user launches it, one run folder, evaluation
that equals single-process `eval` exactly, and resume on another number of devices.

Each 2-process run costs about 30 s of 2 CPU cores: the default run keeps one (sentiment: folder,
exact eval, resume); NER and QA windows, a -m sweep, torchrun and two torchrun "machines" (one of
them killed mid-epoch, then both resumed) are `slow`."""

import contextlib
import json
import re

import pytest
import torch

from tests.conftest import run_cli

# 64 training rows, batch 8 per device: 4 steps per rank and epoch. 37 eval rows in batches of 8:
# 5 batches, dealt 3/2 to the two ranks, and the last one partial (37 is not a multiple of 2 x 8).
TWO_CPUS = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.enable_progress_bar=false"]
SMALL = ["data.max_train_samples=64", "data.batch_size=8", "data.max_eval_samples=37", "data.eval_batch_size=8",
         "trainer.max_epochs=1", "logger=csv"]


def _eval(ckpt, *overrides):
    done = run_cli("eval", f"ckpt={ckpt}", "trainer.enable_progress_bar=false", *overrides)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout[done.stdout.index("{"):])


def _global_step(ckpt):
    return torch.load(ckpt, map_location="cpu", weights_only=False)["global_step"]


@pytest.mark.slow  # CI runs -m slow too (.ci/run); a lighter test covers this by default
def test_ddp_run_has_one_folder_and_equals_single_process_eval_then_resumes_on_one_process(tmp_path):
    # No output_dir: each rank would resolve its own ${now:...} folder if it composed the config itself.
    done = run_cli("train", *TWO_CPUS, *SMALL, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = list((tmp_path / "outputs" / "sample_sentiment").iterdir())
    assert len(runs) == 1, runs
    run = runs[0]
    assert {p.name for p in run.iterdir()} == {".gpt2tasks-run", "config.yaml", "metrics.json", "checkpoints", "logs",
                                               "plots"}
    assert {p.name for p in (run / "checkpoints").iterdir()} == {"best.ckpt", "last.ckpt"}
    assert done.stdout.count("Done.") == 1  # rank 0 reports
    log = done.stdout + done.stderr
    assert "effective batch: 16 = data.batch_size 8 x 2 device(s) x accumulate_grad_batches 1 (DDPStrategy)" in log
    assert _global_step(run / "checkpoints" / "last.ckpt") == 4  # 64 rows / (8 x 2 ranks)

    # The 2-process validation of the best checkpoint equals a 1-process eval of it, to the last bit.
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics) == {f"{s}/{m}" for s in ("val", "test") for m in ("accuracy", "f1", "loss")}
    assert _eval(run / "checkpoints" / "best.ckpt") == metrics
    assert 0.3 < metrics["val/loss"] < 1.5  # a real number, not an empty or all-duplicate set

    # Resume the 2-process run on 1 process: one more epoch of 64 / 8 = 8 steps.
    written = (run / "metrics.json").stat().st_mtime_ns
    resumed = run_cli("train", f"output_dir={run}", "resume=true", "trainer.devices=1", "trainer.max_epochs=2",
                      *[a for a in SMALL if not a.startswith("trainer.max_epochs")], "trainer.enable_progress_bar=false",
                      cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert _global_step(run / "checkpoints" / "last.ckpt") == 4 + 8
    assert "1 device(s)" in resumed.stdout + resumed.stderr
    # metrics.json is rewritten (from the best checkpoint, whichever epoch that is); a new log version
    assert (run / "metrics.json").stat().st_mtime_ns > written
    assert "val/accuracy" in (run / "logs" / "version_1" / "metrics.csv").read_text()


@pytest.mark.parametrize("task, extra", [
    # max_length 16: long sentences become several windows, which land on different ranks
    pytest.param("sample_ner", ["data.max_length=16"], marks=pytest.mark.slow),
    # short windows + stride: most contexts span several windows, answers picked over all of them
    pytest.param("sample_qa", ["data.max_length=64", "data.doc_stride=16"], marks=pytest.mark.slow),
])
def test_ddp_gathers_windows_before_scoring(task, extra, tmp_path):
    out = tmp_path / "run"
    done = run_cli("train", f"task={task}", f"output_dir={out}", *TWO_CPUS, *SMALL, *extra, "logger=none")
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert _eval(out / "checkpoints" / "best.ckpt") == metrics
    if task == "sample_ner":
        assert 0 < metrics["val/accuracy"] < 1  # word accuracy over all 37 sentences
    else:
        predictions = json.loads((out / "predictions.json").read_text())
        assert len(predictions) == 37  # one answer per question, from both ranks' windows


def _gather_worker(rank, world, port, results):
    import torch.distributed as dist

    from gpt2tasks.tasks.base import gather_by_idx

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        # rank 0: one batch of examples 0, 2, 4 with 3 tokens each; rank 1: examples 1, 3 then a
        # repeat of 3 (the even-batches padding), 2 tokens each. Per-token fields pad with -100.
        batches = {0: [[0, 2, 4]], 1: [[1, 3], [3]]}[rank]
        width = {0: 3, 1: 2}[rank]
        parts = [{"idx": torch.tensor(b), "loss": torch.tensor(b).float() * 10,
                  "tags": torch.tensor([[i] * width for i in b]).float()} for b in batches]
        out = gather_by_idx(parts, {"tags": -100.0})
        results[rank] = {k: v.tolist() for k, v in out.items()}
    finally:
        dist.destroy_process_group()


def test_gather_by_idx_over_two_gloo_processes():
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    results = mp.Manager().dict()
    mp.spawn(_gather_worker, args=(2, port, results), nprocs=2)
    expected = {"idx": [0, 1, 2, 3, 4], "loss": [0.0, 10.0, 20.0, 30.0, 40.0],
                "tags": [[0, 0, 0], [1, 1, -100], [2, 2, 2], [3, 3, -100], [4, 4, 4]]}
    assert results[0] == results[1] == expected


@pytest.mark.slow  # CI runs -m slow too (.ci/run); a lighter test covers this by default
def test_deepspeed_missing_is_one_message_and_leaves_nothing(tmp_path):
    import importlib.util

    if importlib.util.find_spec("deepspeed") is not None:
        pytest.skip("deepspeed is installed")
    out = tmp_path / "run"
    done = run_cli("train", "trainer=deepspeed", f"output_dir={out}")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert re.search(r"trainer.strategy=deepspeed needs the optional `deepspeed` package.*pip install deepspeed",
                     done.stderr)
    assert not out.exists()
    # eval of a DeepSpeed checkpoint folder says the same
    from gpt2tasks.errors import UserError
    from gpt2tasks.runfile import load_checkpoint

    folder = tmp_path / "best.ckpt"
    folder.mkdir()
    (folder / "latest").write_text("checkpoint")
    with pytest.raises(UserError, match=r"a DeepSpeed checkpoint folder\) needs the optional `deepspeed`"):
        load_checkpoint(str(folder))


@pytest.mark.slow
def test_multirun_sweep_of_two_process_jobs(tmp_path):
    # each job launches its own second rank: the first job's process group and launcher variables
    # must not leak into the next job
    done = run_cli("train", "-m", "seed=1,2", f"hydra.sweep.dir={tmp_path / 'sweep'}", *TWO_CPUS, *SMALL, "logger=none",
                   cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "sweep").iterdir()) == ["0", "1", "jobs", "multirun.yaml",
                                                                            "summary.json", "summary.md"]
    summary = json.loads((tmp_path / "sweep" / "summary.json").read_text())
    # both jobs' metrics reached the sweep summary (written once, by the sweep's process)
    assert sorted(row["job"] for row in summary) == [0, 1] and all(row["status"] == "COMPLETED" for row in summary)
    assert "seed: 2" in (tmp_path / "sweep" / "1" / "config.yaml").read_text()
    assert not (tmp_path / "outputs").exists()  # no stray folder from the re-launched ranks


@pytest.mark.slow
def test_torchrun_script_starts_ranks_that_share_one_run(tmp_path):
    import os
    import subprocess
    import sys

    from tests.conftest import REPO

    env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(REPO), "RUN_ID": "r1"}
    done = subprocess.run(["bash", str(REPO / "scripts" / "torchrun.sh"), "2", "trainer.accelerator=cpu", *SMALL,
                           "trainer.enable_progress_bar=false"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert [p.name for p in (tmp_path / "outputs" / "sample_sentiment").iterdir()] == ["r1"]
    run = tmp_path / "outputs" / "sample_sentiment" / "r1"
    assert done.stdout.count("Done.") == 1
    assert _eval(run / "checkpoints" / "best.ckpt") == json.loads((run / "metrics.json").read_text())


# ---- two machines: `NNODES=2 NODE_RANK=... scripts/torchrun.sh` on this one -----------------------
# 256 rows, batch 8 per rank, 2 ranks: 16 steps an epoch, 32 in all (a few seconds: time to kill a node
# mid-epoch); last.ckpt after every step, so a killed run leaves a checkpoint of a step just before.
TWO_NODES = ["trainer.accelerator=cpu", "trainer.enable_progress_bar=false", "data.max_train_samples=256",
             "data.batch_size=8", "data.max_eval_samples=37", "data.eval_batch_size=8", "trainer.max_epochs=2",
             "checkpoint.every_n_train_steps=1", "logger=csv"]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_two_nodes(cwd, run_id: str, *overrides: str, logs: str = "") -> list:
    """Node ranks 0 and 1 of one run, one CPU process each, as on two machines (127.0.0.1, gloo)."""
    import os
    import subprocess
    import sys

    from tests.conftest import REPO

    port = _free_port()
    nodes = []
    for node_rank in (0, 1):
        env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(REPO), "RUN_ID": run_id, "NNODES": "2",
               "NODE_RANK": str(node_rank), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
        log = open(cwd / f"{logs or run_id}.node{node_rank}.log", "w")
        nodes.append(subprocess.Popen(["bash", str(REPO / "scripts" / "torchrun.sh"), "1", *TWO_NODES, *overrides],
                                      cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT))
    return nodes


def _kill_machine(pid: int) -> None:
    """SIGKILL a node as a machine failure would: its torchrun and the ranks it started (torchrun
    puts each rank in a session of its own: killing its process group would leave them running)."""
    import os
    import signal
    from pathlib import Path

    def children(parent: int) -> list[int]:
        found = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError):
                if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == parent:
                    found.append(int(stat.parent.name))
        return found

    tree = [pid]
    for process in tree:  # extended while walked: children, their children, ...
        tree.extend(children(process))
    for process in tree:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process, signal.SIGKILL)


def _finish(nodes, timeout: int = 300) -> list[int]:
    import subprocess

    try:
        return [node.wait(timeout=timeout) for node in nodes]
    except subprocess.TimeoutExpired:
        for node in nodes:
            _kill_machine(node.pid)
        raise


@pytest.mark.slow
def test_two_nodes_one_run_equals_one_process_and_resumes_after_a_node_is_killed(tmp_path):
    import signal
    import time

    # uninterrupted: one run folder (outputs/<task>/<RUN_ID>), written by node 0's rank (global rank 0)
    assert _finish(_start_two_nodes(tmp_path, "full")) == [0, 0], (tmp_path / "full.node0.log").read_text()[-3000:]
    logs = [(tmp_path / f"full.node{n}.log").read_text() for n in (0, 1)]
    assert [log.count("Done.") for log in logs] == [1, 0]
    assert "effective batch: 16 = data.batch_size 8 x 2 device(s)" in logs[0]
    assert sorted(p.name for p in (tmp_path / "outputs" / "sample_sentiment").iterdir()) == ["full"]
    full = tmp_path / "outputs" / "sample_sentiment" / "full"
    assert {p.name for p in full.iterdir()} == {".gpt2tasks-run", "config.yaml", "metrics.json", "checkpoints",
                                                "logs", "plots"}
    assert _global_step(full / "checkpoints" / "last.ckpt") == 32
    metrics = json.loads((full / "metrics.json").read_text())
    assert _eval(full / "checkpoints" / "best.ckpt") == metrics  # 2 nodes' evaluation == 1 process, exactly

    # node 1 (its torchrun and its rank) killed in the first epoch, once step 3 is saved: node 0's rank
    # fails at its next collective (gloo: the peer's connection closed) and its torchrun exits
    # non-zero at once -- it must not wait for the dead peer
    nodes = _start_two_nodes(tmp_path, "cut")
    last = tmp_path / "outputs" / "sample_sentiment" / "cut" / "checkpoints" / "last.ckpt"
    deadline, seen, step = time.monotonic() + 300, None, 0
    while step < 3:
        assert time.monotonic() < deadline and nodes[0].poll() is None, (tmp_path / "cut.node0.log").read_text()[-3000:]
        time.sleep(0.02)
        if last.exists() and last.stat().st_mtime_ns != seen:  # loaded only when rewritten
            seen, step = last.stat().st_mtime_ns, _global_step(last)
    _kill_machine(nodes[1].pid)
    began = time.monotonic()
    codes = _finish(nodes, timeout=120)
    assert codes[0] != 0 and codes[1] == -signal.SIGKILL, codes
    assert time.monotonic() - began < 60  # node 0 gave up by itself
    assert not (last.parent.parent / "metrics.json").exists()
    assert 3 <= _global_step(last) < 16  # mid-epoch

    # both nodes restarted with resume=true: the same metrics as the uninterrupted run
    assert _finish(_start_two_nodes(tmp_path, "cut", "resume=true", logs="resumed")) == [0, 0], \
        (tmp_path / "resumed.node0.log").read_text()[-3000:]
    assert _global_step(last) == 32
    assert json.loads((last.parent.parent / "metrics.json").read_text()) == metrics
