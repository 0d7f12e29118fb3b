"""Ctrl-C on `artbot draw`: the job is canceled for real, not left running to
finish unseen, and nothing is written to --out."""

import os
import signal
import sqlite3
import subprocess
import sys
import time

from tests.cli.test_cli import ARTBOT, env  # noqa: F401


def test_ctrl_c_cancels_the_running_job(env):  # noqa: F811
    data, work = env
    environ = dict(os.environ, ARTBOT_DATA_DIR=str(data), ARTBOT_DEVICE="cpu")
    cmd = [str(ARTBOT)] if ARTBOT.exists() else [sys.executable, "-m", "cli"]
    # The bundled emoji-diffusion at 150 steps and 4 images runs for several seconds.
    proc = subprocess.Popen(
        cmd + ["draw", "a blue moon", "--count", "4", "--steps", "150", "--out", "moon.png"],
        cwd=work, env=environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 60
    step = 0
    while time.time() < deadline and step < 2:
        time.sleep(0.1)
        try:
            conn = sqlite3.connect(data / "artbot.db")
            row = conn.execute("SELECT status, progress_step FROM jobs").fetchone()
            conn.close()
        except sqlite3.OperationalError:  # not created or migrated yet
            continue
        if row and row[0] == "running":
            step = row[1] or 0
    assert step >= 2, "the job never got going"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted: job 1 canceled" in err
    conn = sqlite3.connect(data / "artbot.db")
    status, progress = conn.execute("SELECT status, progress_step FROM jobs").fetchone()
    assert status == "canceled" and progress < 150
    assert not list(work.glob("*.png")) and out == ""
