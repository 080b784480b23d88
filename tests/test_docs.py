"""The documentation site builds without warnings and documents every public module."""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = (
    "index",
    "installation",
    "quickstart_zennit",
    "quickstart_captum",
    "quickstart_sklearn",
    "method",
    "evaluation",
    "choosing",
    "distributed",
    "cli",
    "api",
)
PACKAGES = ("atomic_io", "audio_cnn", "audio_concepts", "zennit_drsa")
_BUILD_TIMEOUT_S = 300

needs_sphinx = pytest.mark.skipif(
    importlib.util.find_spec("sphinx") is None,
    reason="Sphinx is not installed (it belongs to the dev extras: pip install sphinx)",
)


def _documented_modules() -> list[str]:
    text = (DOCS / "api.rst").read_text(encoding="utf-8")
    return re.findall(r"^\.\. automodule:: (\S+)\s*$", text, flags=re.MULTILINE)


def _is_deprecated_alias(name: str) -> bool:
    """Whether ``name`` is one of the core's aliases of moved application modules."""
    spec = importlib.util.find_spec(name)
    source = Path(spec.origin).read_text(encoding="utf-8") if spec and spec.origin else ""
    return source.startswith('"""Deprecated alias of')


def _public_modules() -> dict[str, bool]:
    """Every public module of the packages (no ``_`` in its dotted name) → whether it imports."""
    found: dict[str, bool] = {}
    for package in PACKAGES:
        found[package] = True
        root = importlib.import_module(package)
        for info in pkgutil.walk_packages(root.__path__, f"{package}.", onerror=lambda _: None):
            if any(part.startswith("_") for part in info.name.split(".")):
                continue
            if _is_deprecated_alias(info.name):
                continue
            try:
                importlib.import_module(info.name)
            except Exception:
                found[info.name] = False
            else:
                found[info.name] = True
    return found


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The HTML site, built with warnings as errors."""
    out = tmp_path_factory.mktemp("docs")
    command = [
        sys.executable,
        "-m",
        "sphinx",
        "-W",
        "--keep-going",
        "-b",
        "html",
        "-d",
        str(out / "doctrees"),
        str(DOCS),
        str(out / "html"),
    ]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=_BUILD_TIMEOUT_S, cwd=ROOT
    )
    assert done.returncode == 0, f"sphinx build failed:\n{done.stdout[-4000:]}\n{done.stderr}"
    return out / "html"


@needs_sphinx
def test_every_page_is_built_and_linked_from_the_index(site):
    index = (site / "index.html").read_text(encoding="utf-8")
    for page in PAGES:
        assert (site / f"{page}.html").is_file(), f"docs/{page}.rst was not built"
    for page in PAGES[1:]:
        assert f'href="{page}.html"' in index, f"docs/{page}.rst is not in the index's toctree"


@needs_sphinx
def test_api_page_documents_each_listed_module(site):
    api = (site / "api.html").read_text(encoding="utf-8")
    for module in _documented_modules():
        assert f'id="module-{module}"' in api, f"{module} has no entry on the API page"
    # Members come from the docstrings, e.g. the report builder and the front-end.
    assert 'id="audio_concepts.report.Report.write"' in api
    assert 'id="audio_cnn.frontend.LogMel"' in api


def test_api_page_lists_exactly_the_importable_public_modules():
    documented = _documented_modules()
    assert len(documented) == len(set(documented)), "a module is listed twice in docs/api.rst"
    modules = _public_modules()
    broken = sorted(name for name in documented if not modules.get(name, False))
    assert not broken, f"docs/api.rst lists modules that do not import or do not exist: {broken}"
    missing = sorted(name for name, ok in modules.items() if ok and name not in documented)
    assert not missing, f"add these public modules to docs/api.rst (automodule): {missing}"
