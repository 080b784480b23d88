"""benchmarks/gpu_checks.sh, the one script that runs every GPU check on a lent GPU machine,
cannot be run here (no GPU); what can go wrong before it is run is checked instead."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "gpu_checks.sh"


def test_the_script_parses_and_says_how_to_call_it():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    called = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True)
    assert called.returncode == 2
    assert "usage:" in called.stderr and "prepare|run" in called.stderr


def test_every_wheel_it_carries_is_pinned():
    """``prepare`` downloads the pinned version of each package; a pin removed from the
    constraints would stop it."""
    names = re.search(r"^WHEELS=\((.*)\)$", SCRIPT.read_text(), re.MULTILINE).group(1).split()
    pins = (ROOT / "requirements" / "constraints.txt").read_text().lower().splitlines()
    assert "zennit" in names and "captum" in names
    for name in names:
        assert any(line.startswith(f"{name.lower()}==") for line in pins), name


def test_it_runs_the_cuda_tests_and_benchmarks_that_exist():
    text = SCRIPT.read_text()
    for path in re.findall(r"(tests/\S+\.py|benchmarks/\S+\.py)", text):
        assert (ROOT / path).is_file(), path
    # Each selected test file holds tests with "cuda" in their name (what -k cuda selects).
    for path in re.findall(r"tests/\S+\.py", text):
        assert re.search(r"def test_\w*cuda", (ROOT / path).read_text()), path
