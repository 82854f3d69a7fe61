"""`train -m`: the sweep ends with one table of every job's overrides and final metrics, best first;
a job that fails is listed with its error and the others still run."""

import json


def test_two_job_sweep_prints_and_writes_a_summary_best_first(tmp_path, cli, monkeypatch):
    # in-process (`cli`): Hydra's launcher runs the jobs one after the other in this process anyway
    sweep = tmp_path / "sweep"
    monkeypatch.chdir(tmp_path)
    result = cli("train", "-m", "optim.lr=1e-4,3e-3", f"hydra.sweep.dir={sweep}", "trainer.max_epochs=1",
                     "data.max_train_samples=64", "data.max_eval_samples=32", "data.batch_size=16",
                     "trainer.enable_progress_bar=false")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads((sweep / "summary.json").read_text())
    assert sorted(r["job"] for r in rows) == [0, 1]
    for row in rows:  # each row is exactly its job's metrics.json
        assert row["metrics"] == json.loads((sweep / str(row["job"]) / "metrics.json").read_text())
        assert row["status"] == "COMPLETED" and row["monitor"] == "val/accuracy"
    assert rows[0]["metrics"]["val/accuracy"] >= rows[1]["metrics"]["val/accuracy"]  # best first (mode max)
    assert {r["overrides"][0] for r in rows} == {"optim.lr=0.0001", "optim.lr=0.003"}

    table = (sweep / "summary.md").read_text()
    assert "every job: trainer.max_epochs=1 data.max_train_samples=64" in table
    lines = [line for line in table.splitlines() if line.startswith("| ")]
    assert lines[0].startswith("| # | job | overrides | val/accuracy |")
    best = rows[0]
    assert lines[1].startswith(f"| 1 | {best['job']} | {best['overrides'][0]} | {best['metrics']['val/accuracy']:.4f} |")
    assert lines[1].endswith(f"| {best['job']} |")  # the job's folder, relative to the sweep folder
    assert (f"Sweep summary (2 jobs: 2 completed, 0 failed; best: job {best['job']} "
            f"(val/accuracy={best['metrics']['val/accuracy']:.4f}); every job: trainer.max_epochs=1") in result.stdout
    assert lines[1] in result.stdout  # stdout shows the same rows (up to 6 metrics: all of these)


def test_a_failing_job_does_not_end_a_sweep_on_the_basic_launcher(tmp_path, cli, monkeypatch):
    # job 0 fails at once (a bad value); before, its exit 2 ended the sweep and job 1 never ran
    sweep = tmp_path / "sweep"
    monkeypatch.chdir(tmp_path)
    result = cli("train", "-m", "data.max_train_samples=0,32", f"hydra.sweep.dir={sweep}", "trainer.max_epochs=1",
                 "data.max_eval_samples=16", "logger=none", "trainer.enable_progress_bar=false")
    assert result.returncode == 0, result.stderr[-3000:]
    message = "data.max_train_samples=0 must be a positive integer or null (null: every row)."
    assert f"gpt2tasks: error: {message}\n" in result.stderr and "Traceback" not in result.stderr
    rows = json.loads((sweep / "summary.json").read_text())
    assert [(r["job"], r["status"], r["error"]) for r in rows] == [(1, "COMPLETED", None), (0, "FAILED", f"UserError: {message}")]
    assert rows[0]["metrics"] == json.loads((sweep / "1" / "metrics.json").read_text())
    assert not (sweep / "0").exists()  # the failed job wrote nothing
    # what train returned to Hydra: the monitored metric of the run's best checkpoint
    assert json.loads((sweep / "jobs" / "1.json").read_text())["value"] == rows[0]["metrics"]["val/accuracy"]
    assert (f"Sweep summary (2 jobs: 1 completed, 1 failed; best: job 1 "
            f"(val/accuracy={rows[0]['metrics']['val/accuracy']:.4f})") in result.stdout
