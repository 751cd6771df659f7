"""--user/--group: bind a privileged port as root, then serve as an unprivileged user."""

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest
import requests

from conftest import APPS, PORCH_BIN, wait_for_port

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to bind a privileged port")


def free_privileged_port():
    for port in range(900, 1000):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    pytest.skip("no free port below 1024")


def uid_of(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Uid:"):
                return int(line.split()[1])


APP = """
import os
def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "application/json")])
    return [('{"pid": %d}' % os.getpid()).encode()]
"""


def test_serves_as_the_given_user_after_binding(tmp_path):
    nobody = pwd.getpwnam("nobody")
    port = free_privileged_port()
    # The user must be able to reach the binary, the workers' interpreter with porch's
    # extension, and the app: put them all where it can.
    shared = Path(tempfile.mkdtemp(prefix="porch-priv-"))
    try:
        shared.chmod(0o755)
        venv = shared / "env"
        subprocess.run(["/usr/bin/python3", "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
        site = subprocess.run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                              capture_output=True, text=True, check=True).stdout.strip()
        import porch as installed

        shutil.copytree(Path(installed.__file__).parent, Path(site) / "porch")
        binary = venv / "bin" / "porch"
        shutil.copy(PORCH_BIN, binary)
        (shared / "privapp.py").write_text(APP)
        err = tmp_path / "err.log"
        with open(err, "wb") as log:
            proc = subprocess.Popen(
                [str(binary), "-w", "1", "-b", f"127.0.0.1:{port}", "--user", "nobody",
                 "--chdir", str(shared), "privapp:application"],
                cwd=shared, env={k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}, stderr=log,
            )
        _check(proc, port, nobody, err)
    finally:
        shutil.rmtree(shared, ignore_errors=True)


def _check(proc, port, nobody, err):
    try:
        wait_for_port(port, proc)
        worker = requests.get(f"http://127.0.0.1:{port}/pid", timeout=10).json()["pid"]
        assert uid_of(proc.pid) == nobody.pw_uid
        assert uid_of(worker) == nobody.pw_uid
    finally:
        proc.terminate()
        assert proc.wait(20) == 0, err.read_text()


def test_unknown_user_is_a_config_error():
    out = subprocess.run([str(PORCH_BIN), "--user", "no-such-user-here", "--check-config", "wsgiapp:application"],
                         cwd=APPS, capture_output=True, text=True, timeout=30)
    assert out.returncode != 0
    assert "`user`" in out.stderr and "no-such-user-here" in out.stderr
