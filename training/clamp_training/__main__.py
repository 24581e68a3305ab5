"""`python -m clamp_training <command> [args...]`: one entry point for the offline pipeline.

Each command is a module of this package with `main(argv: list[str] | None) -> int | None`.
"""

from __future__ import annotations

import importlib
import sys

# command -> (module, one-line help)
COMMANDS = {
    "convert": ("clamp_training.commands.convert", "episode bags -> zarr dataset (views, state, action, task)"),
    "import-bags": ("clamp_training.commands.import_bags", "plain `ros2 bag record` bags (+ task, success) -> dataset"),
    "train": (
        "clamp_training.commands.train",
        "the one training loop, any stage (diffusion | pretrain | finetune) -> run dir + exported policy",
    ),
    "pretrain": (
        "clamp_training.commands.pretrain",
        "= train --stage pretrain: CLAMP contrastive + policy",
    ),
    "finetune": ("clamp_training.commands.finetune", "= train --stage finetune: frozen CLAMP encoders"),
    "export": ("clamp_training.commands.export", "run dir -> policy dir (model.safetensors + config.json + checksum)"),
    "retrieval": ("clamp_training.commands.retrieval", "retrieval accuracy of CLAMP embeddings on held-out data"),
    "evaluate": ("clamp_training.commands.evaluate", "closed-loop episodes in clamp_sim, executed like the robot"),
    "experiment": ("clamp_training.commands.experiment", "end-to-end experiment (sim data -> train -> evaluate)"),
    "bench": ("clamp_training.bench", "conversion / loader / training throughput, one JSON line"),
}


def _usage() -> str:
    lines = ["usage: python -m clamp_training <command> [args...]", "", "commands:"]
    lines += [f"  {name:<11} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "`python -m clamp_training <command> --help` for a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"error: unknown command {command!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module_name = COMMANDS[command][0]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:  # a dependency of the module is missing: show the real cause
            raise
        print(
            f"error: command {command!r} is not available in this checkout ({module_name} is not installed yet)",
            file=sys.stderr,
        )
        return 2
    rc = module.main(rest)
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
