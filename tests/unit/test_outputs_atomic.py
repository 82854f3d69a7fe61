"""Files written atomically (config.yaml, metrics.json, predictions) get the mode a plain `open()`
would give them, not the private 0600 of the temporary file they are written to."""

import os
import stat

import pytest

from gpt2tasks.outputs import write_atomic


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_atomic_files_get_the_mode_open_gives(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        write_atomic(tmp_path / "metrics.json", "{}\n")
        with open(tmp_path / "plain.txt", "w") as f:  # what any other file of the run gets
            f.write("x")
        assert os.umask(umask) == umask  # reading the umask put it back
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "metrics.json").stat().st_mode) == mode
    assert stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode) == mode
    assert (tmp_path / "metrics.json").read_text() == "{}\n" and sorted(os.listdir(tmp_path)) == ["metrics.json", "plain.txt"]
