"""Scripted demonstrations cut short, for tests whose assertions do not need a finished task."""

from __future__ import annotations


def cut_scripted_demos(monkeypatch, steps: int) -> None:
    """Make clamp_sim.demonstrations generate `steps` control steps per scripted demonstration.

    In this process only: generation with workers > 1 spawns fresh interpreters that do not see the
    patch, so callers generate with workers = 1."""
    import clamp_sim.demonstrations as gen

    make = gen.make_scripted_policy

    def short_policy(task):
        policy = make(task)
        # a subclass whose horizon is `steps` (clamp_sim's horizon may be a read-only property)
        policy.__class__ = type(f"Short{type(policy).__name__}", (type(policy),), {"horizon": steps})
        return policy

    monkeypatch.setattr(gen, "make_scripted_policy", short_policy)
