"""worker.scratch: a job's scratch folder names its pool process, and a new pool process
removes the folders of killed ones (and nothing else)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from worker.scratch import host_tag, job_dir, sweep_orphans

HOLD_A_JOB_DIR = """
import sys, time
from worker.scratch import job_dir
with job_dir("job123") as d:
    (d / "content.png").write_bytes(b"x" * 1000)
    print(d, flush=True)
    time.sleep(120)
"""


def test_given_a_pool_process_killed_inside_a_job_when_swept_expect_its_folder_removed(tmp_path: Path) -> None:
    # given a process killed (SIGKILL) while its job's scratch folder held files
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-c", HOLD_A_JOB_DIR], stdout=subprocess.PIPE, text=True, env=env,
                            cwd=Path(__file__).resolve().parent.parent)
    assert proc.stdout is not None
    folder = Path(proc.stdout.readline().strip())
    assert folder.parent == tmp_path and folder.name.startswith(f"stylefarm-job123-{host_tag()}-p{proc.pid}-")
    assert sweep_orphans(tmp_path) == [] and folder.is_dir()  # alive: kept
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    assert (folder / "content.png").is_file()  # nothing cleaned it up
    # when a new pool process sweeps
    removed = sweep_orphans(tmp_path)
    # expect the dead process's folder gone
    assert removed == [folder] and not folder.exists()


def test_given_folders_of_live_processes_and_others_when_swept_expect_them_kept(tmp_path: Path) -> None:
    # given a folder of this process, one of its parent (alive), one of another host, odd names
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    dead_pid, host = int(dead.stdout), host_tag()
    other_host = "0123abcd" if host != "0123abcd" else "fedc3210"
    kept = [
        tmp_path / f"stylefarm-a-{host}-p{os.getpid()}-abc123",
        tmp_path / f"stylefarm-b-{host}-p{os.getppid()}-abc123",
        tmp_path / f"stylefarm-c-{other_host}-p{dead_pid}-abc123",  # another machine's: its pids mean nothing here
        tmp_path / "stylefarm-metrics-abc123",  # not a job folder
        tmp_path / f"other-c-{host}-p{dead_pid}-abc123",  # not ours
        tmp_path / f"stylefarm-d-{host}-p99999999999-abc123",  # no such pid can exist (os.kill would overflow)
        tmp_path / f"stylefarm-d-{host}-p4294967295-abc123",
    ]
    for path in kept:
        path.mkdir()
    not_a_dir = tmp_path / f"stylefarm-e-{host}-p{dead_pid}-abc123"
    not_a_dir.write_text("a file")
    gone = tmp_path / f"stylefarm-f-{host}-p{dead_pid}-abc123"
    gone.mkdir()
    # when swept
    removed = sweep_orphans(tmp_path)
    # expect only the dead process's job folder of this host removed
    assert removed == [gone]
    assert all(p.is_dir() for p in kept) and not_a_dir.is_file()


def test_given_a_job_dir_expect_it_removed_when_the_job_ends(tmp_path: Path, monkeypatch) -> None:
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with job_dir("j9") as d:
        assert d.is_dir() and d.name.startswith(f"stylefarm-j9-{host_tag()}-p{os.getpid()}-")
        (d / "x").write_text("x")
    assert not d.exists()
