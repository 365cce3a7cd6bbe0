"""``make demo ARGS=--serve`` when the moto server dies: one line saying so, a non-zero exit, no traceback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

CHILD = textwrap.dedent("""
    import functools, sys
    from pathlib import Path
    import devstack.__main__ as demo
    from tests.fakes import build_tiny_bundle
    tmp = Path(sys.argv[1])
    build_tiny_bundle(tmp / "bundle")
    (tmp / "bundle" / "report.md").write_text("A tiny test bundle.")  # the demo prints it
    demo.LocalStack = functools.partial(demo.LocalStack, bundle_dir=tmp / "bundle", model_cache_dir=tmp / "cache")
    sys.exit(demo.main(["--serve", "--frames", "1", "--no-clip"]))
""")


def _moto_child_of(pid: int) -> int:
    """The pid of the moto server process started by ``pid``."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid and b"moto_main.py" in cmdline:
            return int(entry.name)
    raise AssertionError(f"no moto server under pid {pid}")


def test_moto_dying_under_serve_gives_one_line_and_a_clean_exit(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 120
        for line in proc.stdout:  # wait until it serves
            if "Ctrl-C stops everything" in line or time.monotonic() > deadline:
                break
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        os.kill(_moto_child_of(proc.pid), signal.SIGKILL)
        code = proc.wait(timeout=120)
        stderr = proc.stderr.read() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 1, stderr
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("local: the moto server at http://127.0.0.1:"), stderr
    assert "was killed by signal 9" in lines[0] and "run make demo again" in lines[0]
