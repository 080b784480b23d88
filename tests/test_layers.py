"""The layers stand alone: importing the plugin core or the model under study loads nothing
of the layers above or beside it and changes no global setting; moved names still resolve."""

import json
import subprocess
import sys
import warnings

import pytest

# The application's and the audio stack's top-level modules, none of which the core may load.
NOT_IN_THE_CORE = ("audio_cnn", "audio_concepts", "librosa", "soundfile", "matplotlib", "captum")


def _run(code: str) -> dict:
    """Run ``code`` in a fresh interpreter; it prints one JSON object, returned here."""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_importing_the_core_loads_no_audio_plotting_or_captum_module():
    loaded = _run(
        "import json, sys\n"
        "import zennit_drsa, zennit_drsa.estimators, zennit_drsa.evaluation, zennit_drsa.captum\n"
        f"print(json.dumps([m for m in {NOT_IN_THE_CORE!r} if m in sys.modules]))"
    )
    assert loaded == []


def test_importing_the_core_keeps_the_matplotlib_backend_and_torch_settings():
    code = """
import json
import matplotlib
matplotlib.use("svg")
import torch
def settings():
    return [
        torch.get_num_threads(), torch.get_default_dtype() is torch.float32,
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32,
        torch.are_deterministic_algorithms_enabled(), torch.is_grad_enabled(),
        torch.get_float32_matmul_precision(),
    ]
before = settings()
import zennit_drsa
print(json.dumps({"backend": matplotlib.get_backend(), "same": settings() == before,
                  "pyplot": "matplotlib.pyplot" in __import__("sys").modules}))
"""
    result = _run(code)
    assert result == {"backend": "svg", "same": True, "pyplot": False}


def test_importing_the_model_package_is_light_and_keeps_the_backend():
    result = _run(
        "import json, sys\nimport matplotlib\nmatplotlib.use('svg')\nimport audio_cnn\n"
        "print(json.dumps({'backend': matplotlib.get_backend(), 'loaded': [m for m in "
        "('librosa', 'soundfile', 'matplotlib.pyplot', 'audio_cnn.train') if m in sys.modules]}))"
    )
    assert result == {"backend": "svg", "loaded": []}


def test_training_figures_leave_the_backend_alone(tmp_path):
    result = _run(
        "import json, matplotlib\nmatplotlib.use('svg')\n"
        "from audio_cnn.figures import plot_confusion_matrix\n"
        f"plot_confusion_matrix([[3, 1], [0, 4]], ['a', 'b'], {str(tmp_path / 'c.png')!r})\n"
        "print(json.dumps(matplotlib.get_backend()))"
    )
    assert result == "svg"
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"


def test_exported_functions_are_not_shadowed_by_their_submodules():
    import audio_cnn
    import audio_cnn.evaluate  # binds the submodule; the export must win
    import audio_cnn.train

    assert callable(audio_cnn.train) and audio_cnn.train.__name__ == "train"
    assert callable(audio_cnn.evaluate) and audio_cnn.evaluate.__name__ == "evaluate"
    assert sys.modules["audio_cnn.train"].TrainConfig is audio_cnn.TrainConfig


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("zennit_drsa.run_demo", "audio_concepts.demo.run_demo"),
        ("zennit_drsa.AnalysisConfig", "audio_concepts.AnalysisConfig"),
        ("zennit_drsa.Report", "audio_concepts.report.Report"),
        ("zennit_drsa.sonify", "audio_concepts.sonification.sonify"),
        ("zennit_drsa.plots.plot_concept_grid", "audio_concepts.plots.plot_concept_grid"),
        (
            "zennit_drsa.evaluation.plot_flipping_curves",
            "audio_concepts.plots.plot_flipping_curves",
        ),
    ],
)
def test_moved_names_resolve_with_a_deprecation_warning(old, new):
    import importlib

    def resolve(dotted: str):
        module, _, name = dotted.rpartition(".")
        return getattr(importlib.import_module(module), name)

    with pytest.warns(DeprecationWarning, match=new.rpartition(".")[0].split(".")[0]):
        value = resolve(old)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert value is resolve(new)


def test_unknown_names_of_the_core_are_attribute_errors():
    import zennit_drsa

    with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
        zennit_drsa.nonexistent  # noqa: B018
