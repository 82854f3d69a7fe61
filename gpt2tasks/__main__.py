"""`python -m gpt2tasks <command> ...`: a table of commands, each a thin entry point."""

from __future__ import annotations

import sys

COMMANDS = {
    "train": "fine-tune a GPT-2 backbone for a task (Hydra overrides: task=... model=... key=value)",
    "eval": "re-evaluate a checkpoint: eval ckpt=<path> [key=value ...]",
    "predict": "one JSON line per input row: predict ckpt=<path or exported dir> input=<file> output=<file.jsonl>",
    "export": "write a Hugging Face folder (and push it): export ckpt=<path> out=<dir> [merge_lora=true]",
    "combine": "join per-task LoRA adapter runs into one multi-task checkpoint: combine ckpt=<a> ckpt=<b> out=<c>",
}

USAGE = "usage: python -m gpt2tasks <command> [args]\n\ncommands:\n" + "\n".join(
    f"  {name:<8} {text}" for name, text in COMMANDS.items()
) + "\n\n`python -m gpt2tasks <command> --help` shows a command's options; --version (-V) the version."


def main(argv: list[str] | None = None) -> None:
    from gpt2tasks.distributed import spawned_rank_config

    if spawned_rank_config() is not None:
        # Lightning re-launched `train` as another rank (its command line lacks the "train" word):
        # it runs rank 0's config, whatever the arguments.
        from gpt2tasks.train import main as train_main

        train_main()
        return
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] in (["--version"], ["-V"]):
        from gpt2tasks import __version__

        print(f"gpt2tasks {__version__}")
        return
    if not argv:  # a usage error, like a subcommand without its arguments
        print(f"gpt2tasks: error: no command given. Fix: name one of {', '.join(COMMANDS)}.\n\n{USAGE}",
              file=sys.stderr)
        sys.exit(2)
    if argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"gpt2tasks: error: unknown command {command!r}. Fix: use one of {', '.join(COMMANDS)}.\n\n{USAGE}",
              file=sys.stderr)
        sys.exit(2)
    if command == "train":
        from gpt2tasks.train import main as train_main

        sys.argv = [f"{sys.argv[0]} train", *rest]  # Hydra parses sys.argv
        train_main()
    elif command == "eval":
        from gpt2tasks.evaluation import main as eval_main

        eval_main(rest)
    elif command == "predict":
        from gpt2tasks.predict import main as predict_main

        predict_main(rest)
    elif command == "export":
        from gpt2tasks.export import main as export_main

        export_main(rest)
    elif command == "combine":
        from gpt2tasks.combine import main as combine_main

        combine_main(rest)


if __name__ == "__main__":
    main()
