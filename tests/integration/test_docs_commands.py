"""The `python -m gpt2tasks ...` commands of the user-facing documents (README.md, docs/reference.md,
docs/recipes.md) run as written (with a step cap appended).

Every command in a code block or inline code is collected. Templates (`<...>`, `...`) are skipped.
The docs name a user's own files (`data.train_file=path/to/SST-2/train.tsv`): each such folder is
one of ../shared/datasets here (LOCAL_COPIES), and a `path/to/` the table lacks fails the test.
Commands that need the Hub (a GPT-2 size preset without local weights, a GLUE preset without files)
or GPUs are composed with `--cfg job` instead (their keys and groups must exist); those that read
../shared/datasets are skipped when it is absent. Training runs get
`trainer.max_steps=2 data.max_train_samples=16 data.max_eval_samples=16` and a temporary output_dir.
"""

import re
import shlex
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, SHARED_DATASETS, run_cli

CAP = ["trainer.max_steps=2", "trainer.max_epochs=1", "data.max_train_samples=16", "data.max_eval_samples=16",
       "data.eval_batch_size=16", "trainer.enable_progress_bar=false"]
# Size presets that load weights from the Hub (read from conf/model/: a new size is only its YAML)
HUB_MODELS = tuple(p.stem for p in sorted((REPO / "conf" / "model").glob("*.yaml"))
                   if (yaml.safe_load(p.read_text()) or {}).get("name_or_path"))
# Task presets that read a Hub dataset unless given files (their data.hub_path), read from conf/task/
HUB_TASKS = tuple(p.stem for p in sorted((REPO / "conf" / "task").glob("*.yaml"))
                  if ((yaml.safe_load(p.read_text()) or {}).get("data") or {}).get("hub_path"))


# The placeholder folders the documents give -> their copies in ../shared/datasets
LOCAL_COPIES = {
    "path/to/SST-2/": "sst2/",
    "path/to/conll2003/": "conll2003/",
    "path/to/squad/": "squad_v1.1/",
    "path/to/codah/": "codah/cv_split/fold_0/",
    "path/to/wikitext-2/": "wikitext-2/",
    "path/to/gpt2_tokenizer": "gpt2_tokenizer",
    # WikiText-2's own file names: only its valid and test files are shared (its SOURCE.md)
    "path/to/wiki.train.tokens": "wikitext-2/valid.txt",
    "path/to/wiki.valid.tokens": "wikitext-2/valid.txt",
    "path/to/wiki.test.tokens": "wikitext-2/test.txt",
}
# the user-facing documents (benchmark write-ups quote commands mid-sentence, as prose)
DOCUMENTS = ("README.md", "docs/reference.md", "docs/recipes.md")


def local_copies(command: str) -> str:
    """The command with each placeholder folder replaced by its copy in ../shared/datasets."""
    for placeholder, copy in LOCAL_COPIES.items():
        command = command.replace(placeholder, f"{SHARED_DATASETS}/{copy}")
    assert "path/to/" not in command, f"a placeholder path LOCAL_COPIES does not map: {command}"
    return command


def readme_commands() -> list[str]:
    text = "\n".join((REPO / name).read_text() for name in DOCUMENTS)
    found = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        joined = block.replace("\\\n", " ")
        found += [line.split(" #")[0].strip() for line in joined.splitlines()]
    found += re.findall(r"`([^`\n]*python -m gpt2tasks [^`\n]*)`", text)
    commands = []
    for line in found:
        start = line.find("python -m gpt2tasks")
        if start < 0 or "<" in line or "..." in line:
            continue
        command = " ".join(line[start:].split())
        if command not in commands:
            commands.append(command)
    return commands


def needs(args: list[str]) -> set[str]:
    """What a command needs beyond this machine: "hub", "gpu", "shared"."""
    keys = dict(a.split("=", 1) for a in args if "=" in a)
    what = set()
    local_model = "model.name_or_path" in keys or keys.get("model.pretrained") == "false"
    if keys.get("model") in HUB_MODELS and not local_model:
        what.add("hub")
    tasks = [keys.get("task")] if keys.get("task") != "multitask" else keys.get("multitask.tasks", "").strip("[]").split(",")
    for task in filter(None, tasks):
        prefix = "data" if keys.get("task") != "multitask" else f"tasks.{task}.data"
        if task in HUB_TASKS and f"{prefix}.train_file" not in keys:
            what.add("hub")
    if keys.get("trainer") == "fsdp" or (int(keys.get("trainer.devices", 1)) > 1 and keys.get("trainer.accelerator") != "cpu"):
        what.add("gpu")
    if any("../shared" in a or str(SHARED_DATASETS) in a for a in args):
        what.add("shared")
    return what


COMMANDS = readme_commands()


def test_the_readme_commands_are_found():
    # the examples this test exists for: they must stay documented, be picked up, and name only
    # placeholder folders that map to a local copy
    joined = "\n".join(COMMANDS)
    for command in COMMANDS:
        local_copies(command)
    for expected in ("task=sst2 model=tiny", "task=wikitext2", "multitask.tasks=[sst2,conll2003]",
                     "python -m gpt2tasks train peft=lora", "python -m gpt2tasks --help"):
        assert expected in joined, expected


@pytest.mark.slow
@pytest.mark.parametrize("command", COMMANDS)
def test_readme_command_runs(command, tmp_path):
    args = shlex.split(local_copies(command))[3:]  # after "python -m gpt2tasks"
    what = needs(args)
    if "shared" in what and not SHARED_DATASETS.exists():
        pytest.skip(f"needs {SHARED_DATASETS}")
    is_train = args[:1] == ["train"] and not {"--help", "--cfg"} & set(args)
    if is_train and what & {"hub", "gpu"}:
        args = [*args, "--cfg", "job"]  # offline, CPU: check it composes (every key and group exists)
    elif is_train:
        where = f"hydra.sweep.dir={tmp_path / 'sweep'}" if "-m" in args else f"output_dir={tmp_path / 'run'}"
        args = [*args, *CAP, where]
    # ../shared paths in the documents are relative to the repository root
    result = run_cli(*args, cwd=REPO)
    assert result.returncode == 0, f"{command}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    if command == "python -m gpt2tasks train peft=lora":  # the line the reference quotes
        quoted = re.search(r"prints `(model: [^`]*)`", " ".join((REPO / "docs" / "reference.md").read_text().split())).group(1)
        assert quoted in " ".join(result.stdout.split())
    if is_train and not what & {"hub", "gpu"} and "-m" not in args:
        assert (tmp_path / "run" / "metrics.json").is_file()
        assert (tmp_path / "run" / "plots" / "curves.png").is_file()
