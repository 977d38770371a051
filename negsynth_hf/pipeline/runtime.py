"""The process group every step runs in, and progress lines from its main process only."""

from __future__ import annotations

from typing import Any


def process_state() -> Any:
    """The accelerate process group. ``cpu`` follows ``ACCELERATE_USE_CPU`` (set by ``accelerate launch --cpu``):
    without it a CPU-only ``torchrun``/multi-process launch would give every process rank 0 of 1."""
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))


def main_print(*args: Any) -> None:
    """Progress lines from the main process only."""
    if process_state().is_main_process:
        print(*args, flush=True)
