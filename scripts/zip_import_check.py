#!/usr/bin/env python3
"""Check that every module of our code in the Lambda zip imports with only the zip's contents and boto3.

Lambda puts the zip's root (/var/task) on sys.path and supplies boto3; nothing else is there. So each
module under functions/ and shared/ in the zip is imported by a fresh ``PYTHON312 -I -S`` (no site-packages,
no environment) whose sys.path is the unpacked zip and a folder holding only boto3 and its dependencies.
A package's ``__main__`` (a command line) is run with ``--help`` instead, which imports it without
doing its work. Beyond what an import runs, every import statement in our modules, including those
inside functions (imported lazily), must name a module that is in the zip, in boto3's folder or in
the standard library: a development tool (devstack, training, tests, ...) in what ships fails here.

Usage: python scripts/zip_import_check.py --python PYTHON312 --boto3 DIR ZIP
Exit status: 0 when every module imports, 1 otherwise (each failure is listed).
"""

from __future__ import annotations

import argparse
import ast
import subprocess
import sys
import tempfile
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

CODE_DIRS = ("functions", "shared")  # our packages in the zip (scripts/build_package.sh)

# Run in the child: our path setup, then the import (or the command line's --help).
_IMPORT = "import sys; sys.path[:0] = sys.argv[1:3]; import importlib; importlib.import_module(sys.argv[3])"
_MAIN = ("import runpy, sys; sys.path[:0] = sys.argv[1:3]; pkg = sys.argv[3]; sys.argv = [pkg, '--help']; "
         "runpy.run_module(pkg, run_name='__main__', alter_sys=True)")


def module_name(arcname: str) -> str:
    parts = arcname.removesuffix(".py").split("/")
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def our_modules(names: list[str]) -> dict[str, str]:
    """Our Python sources in the zip: dotted module name -> entry name."""
    return {module_name(n): n for n in sorted(names) if n.endswith(".py") and n.split("/")[0] in CODE_DIRS}


def top_levels(root: Path) -> set[str]:
    """Importable top-level names in a folder: packages, modules and extension modules."""
    names = set()
    for entry in root.iterdir():
        if entry.is_dir() and not entry.name.endswith((".dist-info", ".libs", "__pycache__")):
            names.add(entry.name)
        elif entry.suffix in (".py", ".so"):
            names.add(entry.name.split(".")[0])
    return names


def foreign_imports(path: Path, available: set[str]) -> list[str]:
    """Absolute imports anywhere in ``path`` of top-level modules Lambda would not have."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_bytes(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found += [(node.lineno, name) for name in names if name.split(".")[0] not in available]
    return [f"line {line}: imports {name}" for line, name in sorted(found)]


def try_import(python: str, root: Path, boto3_dir: Path, module: str) -> str | None:
    """None when ``module`` imports in a fresh interpreter with only the zip and boto3, else why not."""
    is_main = module.endswith(".__main__")
    code, target = (_MAIN, module.removesuffix(".__main__")) if is_main else (_IMPORT, module)
    proc = subprocess.run([python, "-I", "-S", "-B", "-c", code, str(root), str(boto3_dir), target],
                          cwd=root, capture_output=True, text=True, timeout=120)
    if proc.returncode == 0:
        return None
    lines = proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"]
    return lines[-1]


def check(python: str, zip_path: Path, boto3_dir: Path) -> list[str]:
    with tempfile.TemporaryDirectory(prefix="zip-import-") as tmp:
        root = Path(tmp)
        with zipfile.ZipFile(zip_path) as zf:
            zf.extractall(root)
            modules = our_modules(zf.namelist())
        if not modules:
            return [f"{zip_path} holds no module under {', '.join(CODE_DIRS)}/"]
        stdlib = subprocess.run([python, "-I", "-S", "-c", "import sys; print(*sys.stdlib_module_names)"],
                                capture_output=True, text=True, check=True).stdout.split()
        available = top_levels(root) | top_levels(boto3_dir) | set(stdlib)
        failures = []
        for arcname in modules.values():
            failures += [f"{arcname} {why}" for why in foreign_imports(root / arcname, available)]
        with ThreadPoolExecutor(max_workers=2) as pool:
            results = pool.map(lambda m: (m, try_import(python, root, boto3_dir, m)), modules)
            failures += [f"{module}: {why}" for module, why in results if why is not None]
        print(f"zip_import_check: {len(modules)} modules checked ({', '.join(modules)})")
        return failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("zip", type=Path)
    parser.add_argument("--python", required=True, help="a CPython 3.12 (Lambda's runtime) on x86_64")
    parser.add_argument("--boto3", type=Path, required=True, help="a folder holding only boto3 and its dependencies")
    args = parser.parse_args(argv)
    failures = check(args.python, args.zip, args.boto3)
    for failure in failures:
        print(f"  FAIL {failure}", file=sys.stderr)
    if failures:
        print(f"zip_import_check: {len(failures)} problem(s): the zip must import with only its contents and boto3",
              file=sys.stderr)
        return 1
    print("zip_import_check: OK, every module imports with only the zip's contents and boto3")
    return 0


if __name__ == "__main__":
    sys.exit(main())
