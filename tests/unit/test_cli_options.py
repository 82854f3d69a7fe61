"""The one key=value parser of eval, predict, export and combine (cli.Command)."""

import pytest

from gpt2tasks.cli import Command, Option
from gpt2tasks.errors import UserError

DEMO = Command("demo", (Option("ckpt", metavar="<path>", help="the checkpoint"), Option("n", "yaml"),
                        Option("fast", "bool", False, "go fast"), Option("tag", "list"), Option("hub.repo_id")),
               about="Does nothing.", example="ckpt=a.ckpt", required=("ckpt",), overrides=True)


def test_values_are_typed_defaults_filled_and_the_rest_passes_through():
    values, rest = DEMO.parse(["ckpt=a.ckpt", "n=3", "fast=TRUE", "tag=x", "data.max_length=8", "tag=y",
                               "hub_repo_id=alice/m", "loose", "fa.st=false"])
    assert values == {"ckpt": "a.ckpt", "n": 3, "fast": True, "tag": ["x", "y"], "hub_repo_id": "alice/m"}
    assert rest == ["data.max_length=8", "loose", "fa.st=false"]  # checked later against the run's config
    assert DEMO.parse(["ckpt=a", "hub.repo_id=bob/m"])[0]["hub_repo_id"] == "bob/m"
    assert DEMO.parse(["ckpt=", "n=[1, 2]"])[0] == {"ckpt": "", "n": [1, 2], "fast": False, "tag": [],
                                                    "hub_repo_id": None}
    assert DEMO.parse(["ckpt=a", "n=a: b: c"])[0]["n"] == "a: b: c"  # not YAML: the text itself
    # options known at run time (predict's per-kind ones) appear only when given
    assert DEMO.parse(["ckpt=a", "top_p=0.9"], more=[Option("top_p", "yaml"), Option("seed", "yaml")]) == (
        {"ckpt": "a", "n": None, "fast": False, "tag": [], "hub_repo_id": None, "top_p": 0.9}, [])


def test_errors_name_the_key_and_the_fix():
    with pytest.raises(UserError, match=r"^demo: fast='yes' must be true or false. Fix: fast=true or fast=false.$"):
        DEMO.parse(["ckpt=a", "fast=yes"])
    with pytest.raises(UserError, match=r"^demo needs ckpt=. Fix: e.g. python -m gpt2tasks demo ckpt=a.ckpt.\nusage:"):
        DEMO.parse(["n=1"])
    strict = Command("strict", DEMO.options, about="", example="ckpt=a.ckpt")
    with pytest.raises(UserError, match=r"^strict: 'output=x' is not one of its key=value options \(ckpt=, n=, fast=, "
                                        r"tag=, hub.repo_id=\). Fix: e.g. python -m gpt2tasks strict ckpt=a.ckpt."):
        strict.parse(["ckpt=a", "output=x"])


def test_usage_lists_every_option_with_its_help_and_default():
    usage = DEMO.usage()
    synopsis, options = usage.split("\n\noptions:\n")
    assert " ".join(synopsis.split()) == ("usage: python -m gpt2tasks demo ckpt=<path> [n=<value>] [fast=true|false] "
                                         "[tag=<value> [tag=...]] [hub.repo_id=<value>] [key=value ...]")
    assert all(len(line) <= 110 for line in synopsis.splitlines())  # wrapped
    assert options.splitlines()[:3] == ["  ckpt=<path>            the checkpoint", "  n=<value>",
                                        "  fast=true|false        go fast (default: false)"]
    assert usage.endswith("\n\nDoes nothing.")
