"""The suite's own promise: a SIGTERM to pytest (what `timeout` and CI runners send) ends every
process its tests started, also under xdist, where the tests run in worker processes."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from helpers import procs

# A test that starts a long process the way the suite's tests do (its own process group), says
# where it is, and waits.
WAITING_TEST = '''
import os, sys, time
from helpers import procs

def test_waits():
    child = procs.start([sys.executable, "-c", "import time; time.sleep(300)"])
    with open(os.environ["CHILD_PID_FILE"], "w") as f:
        f.write(str(child.pid))
    time.sleep(300)
'''


def alive(pid: int) -> bool:
    """Whether pid is a process that has not ended (a zombie has ended)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_sigterm_to_pytest_ends_the_processes_its_workers_started(tmp_path):
    (tmp_path / "test_waiting.py").write_text(WAITING_TEST)
    pid_file = tmp_path / "child.pid"
    # tests/conftest.py as a plugin (the file above lives outside tests/), one xdist worker.
    env = procs.command_env({"CHILD_PID_FILE": str(pid_file)})
    pytest = procs.start([sys.executable, "-m", "pytest", "-p", "conftest", "-n", "1", "-q", "-p", "no:cacheprovider",
                          "--rootdir", str(tmp_path), "-c", os.devnull, str(tmp_path / "test_waiting.py")],
                         cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while not pid_file.is_file() or not pid_file.read_text():
        assert pytest.poll() is None, pytest.stdout.read()[-3000:]
        assert time.monotonic() < deadline, "the waiting test did not start its process"
        time.sleep(0.1)
    child = int(pid_file.read_text())
    assert alive(child)

    os.kill(pytest.pid, signal.SIGTERM)  # pytest alone, not its process group
    output = pytest.communicate(timeout=60)[0]
    assert pytest.returncode != 0 and "pytest received SIGTERM" in output, output[-3000:]
    deadline = time.monotonic() + 10
    while alive(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(child), f"process {child}, started by the test, outlived pytest"
