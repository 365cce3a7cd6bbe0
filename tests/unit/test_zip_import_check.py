"""scripts/zip_import_check.py, which make package runs on the built Lambda zip, on small zips of its own."""

from __future__ import annotations

import importlib.util
import sys
import zipfile
from pathlib import Path
from types import ModuleType

from tests.conftest import REPO


def _checker() -> ModuleType:
    spec = importlib.util.spec_from_file_location("zip_import_check", REPO / "scripts" / "zip_import_check.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _zip(path: Path, files: dict[str, str]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)
    return path


def test_module_names_of_our_code_only() -> None:
    names = ["functions/__init__.py", "functions/video/__main__.py", "shared/config.py", "numpy/__init__.py",
             "functions/__pycache__/classify.cpython-312.pyc", "functions/requirements.txt"]
    assert _checker().our_modules(names) == {"functions": "functions/__init__.py",
                                             "functions.video.__main__": "functions/video/__main__.py",
                                             "shared.config": "shared/config.py"}


def test_a_dev_only_import_fails_even_when_lazy_and_a_clean_zip_passes(tmp_path: Path) -> None:
    checker = _checker()
    (tmp_path / "boto3").mkdir()  # stands in for Lambda's boto3 folder
    clean = {"functions/__init__.py": "", "functions/handler.py": "import json\nfrom shared import util\n",
             "shared/__init__.py": "", "shared/util.py": "X = 1\n",
             "functions/cli/__init__.py": "",
             # a command line: checked with --help, which exits 0 before its work (here, a failing exit)
             "functions/cli/__main__.py": "import argparse\nargparse.ArgumentParser().parse_args()\n"
                                          "raise SystemExit(3)\n"}
    assert checker.check(sys.executable, _zip(tmp_path / "clean.zip", clean), tmp_path / "boto3") == []

    dev = {**clean, "functions/local.py": "import json\n\ndef demo():\n    from devstack import samples\n",
           "functions/eager.py": "import training.fit\n"}
    failures = checker.check(sys.executable, _zip(tmp_path / "dev.zip", dev), tmp_path / "boto3")
    assert failures == ["functions/eager.py line 1: imports training.fit",
                        "functions/local.py line 4: imports devstack",
                        "functions.eager: ModuleNotFoundError: No module named 'training'"]
