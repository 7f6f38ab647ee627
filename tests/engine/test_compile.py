"""TEST.COMPILE's tests (tests/engine/compile_cases.py) in a pytest process of their own.

They were moved out of the suite's process while chasing a segmentation fault of that process
(session 8), which turned out to be torch's SIGCHLD handler left behind by DataLoader workers (see
tests/conftest.py); with that fixed, this separation was kept because it is the configuration the
fix was checked in (running the cases in the suite's process again is untested). It also keeps
inductor's compiled code and threads out of the other tests. The cases' own output is shown when
they fail.
"""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_compile_cases_pass_in_their_own_process():
    env = dict(os.environ, TORCHINDUCTOR_COMPILE_THREADS=os.environ.get("TORCHINDUCTOR_COMPILE_THREADS", "1"))
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
                           str(ROOT / "tests" / "engine" / "compile_cases.py")],
                          cwd=str(ROOT), env=env, capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert " passed" in proc.stdout and " failed" not in proc.stdout
