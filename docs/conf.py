"""Sphinx configuration of the zennit-drsa documentation (build: python -m sphinx -W docs OUT)."""

import sys
from importlib import metadata
from pathlib import Path

# Document the checkout being built, also when it is not installed.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

project = "zennit-drsa"
author = "zennit-drsa developers"
copyright = "zennit-drsa developers"
try:
    release = metadata.version("zennit-drsa")
except metadata.PackageNotFoundError:
    release = "unreleased"
version = release

extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.viewcode"]
exclude_patterns = ["_build"]

# Docstrings are numpy style; Attributes sections become field lists, not separate entries
# that would clash with the attributes autodoc documents itself.
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_ivar = True
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_member_order = "bysource"

html_theme = "alabaster"
html_title = "zennit-drsa"
html_theme_options = {
    "description": "Concept-level explanations of audio neural networks",
    "fixed_sidebar": True,
}


def _skip_generated_request_methods(app, what, name, obj, skip, options):
    """scikit-learn generates ``set_*_request`` methods whose docstrings cite its glossary."""
    if name.startswith("set_") and name.endswith("_request"):
        return True
    return skip


def setup(app):
    app.connect("autodoc-skip-member", _skip_generated_request_methods)
