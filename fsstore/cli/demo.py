"""``fsstore demo``: the main job. Records a realistic multi-turn coding-agent session
into a store, then says what is on disk and how to look at it (``demo_session.py``)."""

from __future__ import annotations

import argparse

from ._common import add_command

DEFAULT_PATH = "fsstore-demo"


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = add_command(
        commands, "demo", "record a sample agent session into a store and describe it",
        "fsstore demo /tmp/agent-store && fsstore --store /tmp/agent-store ls",
        description="Record a realistic multi-turn coding-agent session (messages: user "
                    "prompts, assistant replies with reasoning, tool calls and their "
                    "results, models, token usage and cost; finished turns; a fork, a "
                    "spawned sub-agent and a workspace) into "
                    f"PATH (default ./{DEFAULT_PATH}), then print what is on disk.")
    demo.add_argument("path", nargs="?", default=None, metavar="PATH",
                      help=f"the store to record into (default: ./{DEFAULT_PATH})")
    demo.set_defaults(run=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    from .demo_session import record_store  # numpy and the engine: only when it runs

    return record_store(args.path)
