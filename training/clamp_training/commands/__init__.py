"""Command-line entry points of clamp_training (one module per command, each with `main(argv)`).

Library modules never hold a CLI; `python -m clamp_training <command>` dispatches here."""
