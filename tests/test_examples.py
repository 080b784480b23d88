"""The examples run end to end (small sizes) and print what they promise."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
NAMES = ("zennit_workflow.py", "captum_workflow.py", "sklearn_pipeline.py", "own_model.py")
SMALL = ["--clips", "6", "--steps", "3", "--max-iter", "20"]
# own_model.py synthesises its audio folder; 12 clips per class leave test clips of both.
ARGUMENTS = {"own_model.py": ["--clips", "12", "--steps", "20", "--max-iter", "20"]}


@pytest.fixture(scope="module")
def outputs(tmp_path_factory) -> dict[str, subprocess.CompletedProcess]:
    """Run all examples at once (one thread each), so that they share the cores."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    logs = tmp_path_factory.mktemp("examples")
    running = {}
    for name in NAMES:
        # Files, not pipes: a full pipe would stall an example while another one is awaited.
        stdout, stderr = (open(logs / f"{name}.{stream}", "w+") for stream in ("out", "err"))
        command = [sys.executable, str(EXAMPLES / name), *ARGUMENTS.get(name, SMALL)]
        running[name] = (
            subprocess.Popen(command, stdout=stdout, stderr=stderr, env=env),
            stdout,
            stderr,
        )
    results = {}
    for name, (process, stdout, stderr) in running.items():
        process.wait(timeout=600)
        with stdout, stderr:
            stdout.seek(0)
            stderr.seek(0)
            results[name] = subprocess.CompletedProcess(
                process.args, process.returncode, stdout.read(), stderr.read()
            )
    return results


def run_example(outputs: dict[str, subprocess.CompletedProcess], name: str) -> str:
    completed = outputs[name]
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed.stdout


@pytest.mark.slow
def test_zennit_workflow(outputs):
    output = run_example(outputs, "zennit_workflow.py")
    assert "toy AudioCNN trained for 3 steps" in output
    assert "K = 4 subspaces of 8 of 32 dims, fitted on 120 (a, c) pairs" in output
    rows = re.findall(r"^ +([+-]\d+\.\d+ +){4}[+-]\d+\.\d+$", output, flags=re.MULTILINE)
    assert len(rows) == 4
    error = float(re.search(r"standard heatmap: max error (\S+)", output).group(1))
    assert error < 1e-4
    assert len(re.findall(r"\d+ Hz", output)) == 4


@pytest.mark.slow
def test_captum_workflow(outputs):
    output = run_example(outputs, "captum_workflow.py")
    assert "standard map (4, 1, 64, 64)" in output
    concepts = re.findall(r"^concept +(\S+): Σ relevance +(\S+) +infidelity (\S+)", output, re.M)
    assert [name for name, _, _ in concepts] == ["0", "1", "2", "3", "residual"]
    layer = re.search(r"layer \(mean over clips\): (.*)  \(last: residual\)", output).group(1)
    assert len(layer.split(", ")) == 5
    assert re.search(r"SmoothGrad version: cosine similarity -?\d\.\d\d$", output, re.M)


@pytest.mark.slow
def test_sklearn_pipeline(outputs):
    output = run_example(outputs, "sklearn_pipeline.py")
    scores = dict(re.findall(r"^  (DRSA|PRCA): (\S+) ±", output, flags=re.MULTILINE))
    assert set(scores) == {"DRSA", "PRCA"}
    assert all(float(score) >= 0 for score in scores.values())
    shares = re.findall(r"^ +(-?\d+\.\d%(?: +-?\d+\.\d%){4})$", output, flags=re.MULTILINE)
    assert len(shares) == 4
    for row in shares:
        assert sum(float(v.rstrip("%")) for v in row.split()) == pytest.approx(100, abs=0.5)


@pytest.mark.slow
def test_own_model_goes_through_fit_explain_evaluate_and_report(outputs):
    output = run_example(outputs, "own_model.py")
    assert "my CNN + torchaudio MelSpectrogram: 20 steps" in output
    assert "fit: layer 7, K = 2 of 16 dims" in output
    rows = dict(re.findall(r"^(drsa|prca|dsa|random|standard) +(.*)$", output, flags=re.M))
    assert set(rows) == {"drsa", "prca", "dsa", "random", "standard"}
    recovery = float(rows["drsa"].split()[-2])  # known sound objects: recovery is scored
    assert 0.0 <= recovery <= 1.0
    size = int(re.search(r"^report: \S+report\.html \((\d+) bytes\)$", output, re.M).group(1))
    assert size > 10_000  # figures and sounds are embedded
