"""Test-only: makes child Python processes use the development stand-in for
``fluxon_py._native`` when the real extension is not built (see ../conftest.py)."""

import importlib.util
import os
import sys

_here = os.path.dirname(os.path.abspath(__file__))
if importlib.util.find_spec("fluxon_py") is not None:
    try:
        importlib.import_module("fluxon_py._native")
    except ImportError:
        sys.path.insert(0, os.path.dirname(_here))
        import local_native

        sys.modules["fluxon_py._native"] = local_native
