"""SIGTERM is a preemption, Ctrl-C the user's stop (lrsearch.interrupt), in a process of its own:
a stop request lasts for the life of the process it was made in."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROBE = """
import os, signal
from lrsearch import interrupt
with interrupt.deferred_interrupts(echo=lambda line: None):
    os.kill(os.getpid(), signal.{sig})
    try:
        interrupt.check()
    except interrupt.Preempted:
        print("preempted", interrupt.preempted())
    except interrupt.StopRequested:
        print("stopped", interrupt.preempted())
"""


@pytest.mark.parametrize(
    ("sig", "said"), [("SIGTERM", "preempted True"), ("SIGINT", "stopped False")]
)
def test_sigterm_preempts_and_ctrl_c_only_stops(sig: str, said: str) -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(sig=sig)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert out.stdout.strip() == said
