"""`ray job submit` against a real local `ray start --head`, the way the README's demo and a cluster run the jobs.

The head is this test's own: its own temp dir, free ports for every fixed-port service, and a marker variable in
its environment. It is torn down by killing exactly the processes that carry the marker (never `ray stop`, which
stops every Ray on the machine, other engineers' and the test session's included).
Ray 2.60 turns token authentication on by default; the head is started with RAY_AUTH_MODE=disabled
(/work/shared/research/install.md, "ray job submit against ray start --head").
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
RAY = str(VENV_BIN / "ray")
MARKER = "DISTILL_TEST_RAY_HEAD"
START_TIMEOUT_S = 180
SUBMIT_TIMEOUT_S = 300
RESULT_PREFIX = "JOB_RESULT "

# The job: parse the real label entry point's arguments (--help: cheap), load both pipeline configs from the
# uploaded working dir, run a real task on the head, and report which interpreter it all ran on.
JOB_CODE = f"""
import json, subprocess, sys, ray, distill
label_help = subprocess.run([sys.executable, "ray_jobs/label.py", "--help"], capture_output=True, text=True)
from distill.config.pipeline import load_pipeline_config
from distill.hashing import stable_hash
sizes = {{p: load_pipeline_config(p).label.groups for p in ("configs/embedded.yaml", "configs/production.yaml")}}
ray.init()
@ray.remote(num_cpus=1)
def hashed(text):
    import sys
    from distill.hashing import stable_hash
    return stable_hash(text), sys.executable
value, task_python = ray.get(hashed.remote("red apple"))
print({RESULT_PREFIX!r} + json.dumps({{"hash": value, "expected": stable_hash("red apple"), "groups": sizes,
      "driver_python": sys.executable, "task_python": task_python,
      "cwd_has_ray_jobs": __import__("os").path.isdir("ray_jobs"),
      "label_help_rc": label_help.returncode, "label_help": label_help.stdout[:200]}}))
"""


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _marked_pids(token: str) -> list[int]:
    """Processes whose environment carries MARKER=token: the head's daemons, workers and job drivers."""
    needle = f"{MARKER}={token}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                pids.append(int(entry.name))
        except OSError:  # gone, or not ours to read
            continue
    return pids


def _signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _kill_head(token: str, grace_s: float = 10.0, sweep_s: float = 15.0) -> list[int]:
    """SIGTERM every marked process, give them grace_s, then SIGKILL in sweeps (a dying raylet can still spawn a
    worker) until none is left or sweep_s has passed. Returns every pid that was seen."""
    seen = set(_marked_pids(token))
    _signal_all(sorted(seen), signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and _marked_pids(token):
        time.sleep(0.5)
    deadline = time.monotonic() + sweep_s
    while (left := _marked_pids(token)) and time.monotonic() < deadline:
        seen.update(left)
        _signal_all(left, signal.SIGKILL)
        time.sleep(0.2)
    return sorted(seen)


def _describe(pids: list[int]) -> str:
    out = []
    for pid in pids:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            out.append(f"{pid}: {cmdline[:200]}")
        except OSError:
            out.append(f"{pid}: (gone)")
    return "\n".join(out)


class LocalHead:
    def __init__(self, env: dict, address: str, temp_dir: str, token: str, start_s: float):
        self.env, self.address, self.temp_dir, self.token, self.start_s = env, address, temp_dir, token, start_s

    def ray(self, *args: str, timeout: float = SUBMIT_TIMEOUT_S) -> subprocess.CompletedProcess:
        return subprocess.run([RAY, *args], env=self.env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)

    def status(self, submission_id: str) -> str:
        """The job's terminal status word as `ray job status` prints it ("succeeded", "failed", ...)."""
        out = self.ray("job", "status", "--address", self.address, "--log-style", "record", submission_id, timeout=60)
        text = (out.stdout + out.stderr).lower()
        for word in ("succeeded", "failed", "stopped", "running", "pending"):
            if f"job '{submission_id}' {word}" in text or f"status for job '{submission_id}': {word}" in text:
                return word
        raise AssertionError(f"no status for {submission_id} in:\n{out.stdout}\n{out.stderr}")

    def submit(self, *args: str) -> tuple[subprocess.CompletedProcess, float]:
        t0 = time.monotonic()
        proc = self.ray("job", "submit", "--address", self.address, *args)
        return proc, time.monotonic() - t0


@pytest.fixture(scope="module")
def local_head():
    token = uuid.uuid4().hex
    # Short path: Ray's unix sockets live under it and must stay below the 107-byte limit.
    temp_dir = tempfile.mkdtemp(prefix="rjs-", dir="/tmp")
    gcs, dashboard, client, agent, metrics = _free_ports(5)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update({
        MARKER: token,
        "RAY_AUTH_MODE": "disabled",
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_TMPDIR": temp_dir,
        # The job's `python` is resolved from the head's PATH: the venv's interpreter must come first.
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "HF_HUB_OFFLINE": "1",
    })
    cmd = [RAY, "start", "--head", "--num-cpus=1", "--num-gpus=0", f"--port={gcs}",
           "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
           f"--ray-client-server-port={client}", f"--dashboard-agent-listen-port={agent}",
           f"--metrics-export-port={metrics}", f"--temp-dir={temp_dir}", "--node-ip-address=127.0.0.1",
           "--object-store-memory=200000000", "--disable-usage-stats"]
    t0 = time.monotonic()
    try:
        started = subprocess.run(cmd, env=env, cwd=temp_dir, capture_output=True, text=True,
                                 timeout=START_TIMEOUT_S, start_new_session=True)
        assert started.returncode == 0, f"ray start failed:\n{started.stdout}\n{started.stderr}"
        head = LocalHead(env, f"http://127.0.0.1:{dashboard}", temp_dir, token, time.monotonic() - t0)
        yield head
    finally:
        t1 = time.monotonic()
        killed = _kill_head(token)
        print(f"\n[test_job_submit] head stopped: {len(killed)} processes in {time.monotonic() - t1:.1f}s",
              file=sys.stderr)
        survivors = _marked_pids(token)
        if not survivors:  # a survivor may still hold files there; leave them for the post-mortem
            shutil.rmtree(temp_dir, ignore_errors=True)
        assert not survivors, f"processes of the test's Ray head survived SIGKILL:\n{_describe(survivors)}"


def _result_line(stdout: str) -> dict:
    lines = [line for line in stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    assert len(lines) == 1, f"expected one result line in the job output:\n{stdout}"
    return json.loads(lines[0][len(RESULT_PREFIX):])


def test_job_submit_runs_the_project_on_a_local_head(local_head):
    from distill.config.pipeline import load_pipeline_config
    from distill.hashing import stable_hash

    submission_id = f"distill-test-{uuid.uuid4().hex[:8]}"
    proc, took = local_head.submit("--submission-id", submission_id, "--working-dir", str(ROOT),
                                   "--", "python", "-c", JOB_CODE)
    print(f"\n[test_job_submit] ray start {local_head.start_s:.1f}s, submit round trip {took:.1f}s", file=sys.stderr)
    assert proc.returncode == 0, f"job failed:\n{proc.stdout}\n{proc.stderr}"
    result = _result_line(proc.stdout)
    assert result["hash"] == result["expected"] == stable_hash("red apple")
    assert result["groups"] == {p: load_pipeline_config(ROOT / p).label.groups
                                for p in ("configs/embedded.yaml", "configs/production.yaml")}
    # Driver and task both ran the venv's interpreter, in the uploaded copy of the repo.
    assert Path(result["driver_python"]).parent == VENV_BIN
    assert Path(result["task_python"]).parent == VENV_BIN
    assert result["cwd_has_ray_jobs"] is True
    assert result["label_help_rc"] == 0 and result["label_help"].startswith("usage: label.py")
    assert local_head.status(submission_id) == "succeeded"


def test_failed_job_reports_a_nonzero_exit_and_its_output(local_head):
    submission_id = f"distill-test-{uuid.uuid4().hex[:8]}"
    proc, _ = local_head.submit("--submission-id", submission_id,
                                "--", "python", "-c", "import sys; print('about to fail'); sys.exit(3)")
    assert proc.returncode != 0
    assert "about to fail" in proc.stdout
    assert local_head.status(submission_id) == "failed"
