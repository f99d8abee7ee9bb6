"""Processes killed under a running search (issue 10, items 2 and 3): a trial's own process
SIGKILLed (Tune restarts it from its last reported checkpoint, within max_failures), and the
search driver SIGKILLed with its whole Ray cluster (`gantune tune SPACE --resume` goes on).

What each test measures is read back from what the search wrote: progress.csv (Tune stamps every
report with the pid of the process that made it), summary.json, the trial's TensorBoard steps
(one event file per process, named with its pid), the COMPLETE markers of its checkpoints, and
Tune's own failure records.

Tune writes a trial's checkpoints straight to the storage path, but its reports (progress.csv,
result.json) and its experiment state go to a staging folder on the driver's node first, and
reach the storage path at each experiment-state save (every 10 s or more). A report "written
before the kill" is one that had reached the storage path. TensorBoard is written by the trial
straight into its folder on the storage path (trial.py's `trial_dir`), where the tests watch a
running trial's steps.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from test_tune import gantune, make_space

STEPS, EVERY = 8, 2  # four reports per trial
OBJECTIVE = "metric/fd_random_inception_dims192"
PBT = "scheduler: {name: pbt, perturbation_interval: 1, quantile_fraction: 0.5, resample_probability: 0.5}"
DEADLINE_S = 600  # a slow, loaded 2-core CI machine


def _start(space: Path, cwd: Path) -> subprocess.Popen[str]:
    """`gantune tune SPACE` in a session of its own (its Ray cluster too), output to a file: a
    pipe nobody reads would fill up and stall the driver."""
    log = open(cwd / "driver.log", "w")  # noqa: SIM115  (the child holds it)
    return subprocess.Popen([sys.executable, "-m", "ray_jobs.cli", "tune", str(space)], cwd=cwd, text=True,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _rows(trial_dir: Path) -> list[dict[str, str]]:
    """The trial's reports that have reached the storage path."""
    try:
        with open(trial_dir / "progress.csv", newline="") as f:
            return list(csv.DictReader(f))
    except FileNotFoundError:
        return []


def _checkpoint_steps(trial_dir: Path) -> dict[str, int]:
    """Step of each complete checkpoint folder of the trial (Tune copies a folder into place file
    by file: a marker still being copied is not read yet)."""
    steps = {}
    for marker in trial_dir.glob("checkpoint_*/COMPLETE"):
        try:
            steps[marker.parent.name] = int(json.loads(marker.read_text())["step"])
        except (OSError, ValueError, KeyError):
            continue
    return steps


def _trial_processes(sid: int, exp: Path) -> dict[str, tuple[int, Path]]:
    """The running trials of the search in session `sid`: trial folder name -> (pid of Ray's
    worker running its function trainable, its folder under `exp` on the storage path). Ray runs
    each in <staging>/working_dirs/<trial>."""
    found = {}
    for pid, cmdline in _session_processes(sid).items():
        try:
            cwd = Path(os.readlink(f"/proc/{pid}/cwd"))
        except OSError:
            continue
        if cmdline.startswith("ray::ImplicitFunc") and cwd.parent.name == "working_dirs":
            found[cwd.name] = (pid, exp / cwd.name)
    return found


def _tb_steps(trial_dir: Path, tag: str = "ema/beta") -> dict[int, list[int]]:
    """The training steps each process of the trial logged (`ema/beta` is logged at every step),
    by pid: torch names an event file events.out.tfevents.<time>.<host>.<pid>.<n>."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    steps: dict[int, list[int]] = {}
    for path in sorted((trial_dir / "tb").glob("events.out.tfevents.*")):
        acc = EventAccumulator(str(path), size_guidance={"scalars": 0, "images": 1, "tensors": 1},
                               purge_orphaned_data=False)  # keep steps a restart logs again
        acc.Reload()
        if tag in acc.Tags()["scalars"]:
            steps.setdefault(int(path.name.split(".")[-2]), []).extend(e.step for e in acc.Scalars(tag))
    return steps


def _process(pid: int) -> tuple[str, int, str] | None:
    """(command line, session id, state) of a live process, or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # after "(comm)": state, ppid, pgrp, session
    return cmdline, int(fields[3]), fields[0]


def _session_processes(sid: int) -> dict[int, str]:
    """Every process still running in session `sid` (zombies are gone but for their entry)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (info := _process(int(entry.name))) is not None:
            cmdline, session, state = info
            if session == sid and state != "Z":
                found[int(entry.name)] = cmdline
    return found


def _outlived(sid: int, limit_s: float = 120) -> tuple[dict[int, str], float]:
    """After a SIGKILL of session `sid`'s process group: the processes still there at once, and
    the seconds until none is left. Ray's workers are in process groups of their own and exit
    once their raylet is gone (measured: about 26 s); none may outlive `limit_s`."""
    left, start = _session_processes(sid), time.monotonic()
    while _session_processes(sid) and time.monotonic() < start + limit_s:
        time.sleep(0.2)
    assert not _session_processes(sid), f"left {limit_s:g} s after the kill: {_session_processes(sid)}"
    return left, time.monotonic() - start


def _failures(exp: Path) -> dict[str, int]:
    """Tune's count of failures per trial id, from its newest experiment state."""
    state = json.loads(max(exp.glob("experiment_state-*.json")).read_text())
    return {json.loads(trial)["trial_id"]: json.loads(meta)["num_failures"] for trial, meta in state["trial_data"]}


@pytest.mark.slow
def test_a_killed_trial_restarts_from_its_last_reported_checkpoint(tmp_path: Path) -> None:
    # No PBT here: its exploits restart trials from other checkpoints too, and would blur which
    # restart the kill caused and which steps it cost.
    space = make_space(tmp_path, "k", base_edits={"steps: 6": f"steps: {STEPS}"},
                       **{"num_samples: 2": "num_samples: 2\nmax_failures: 2", PBT: "scheduler: none"})
    exp = tmp_path / "runs" / "k"
    proc = _start(space, tmp_path)
    try:
        # The victim: a trial with a reported checkpoint that has trained on past it, and at
        # least one report still to make after its restart.
        deadline = time.monotonic() + DEADLINE_S
        victim = None
        while victim is None:
            assert proc.poll() is None, "the search ended before a trial could be killed"
            assert time.monotonic() < deadline, "no trial trained past a checkpoint in time"
            for name, (pid, folder) in sorted(_trial_processes(proc.pid, exp).items()):
                reported = max(_checkpoint_steps(exp / name).values(), default=0)
                if not 0 < reported <= STEPS - EVERY:
                    continue
                steps = _tb_steps(folder)
                if list(steps) == [pid] and max(steps[pid]) > reported:
                    victim = exp / name
                    break
            time.sleep(0.1)
        # That pid is the trial's own process: Ray's worker running a function trainable, in this
        # search's session, still alive.
        info = _process(pid)
        assert info is not None and info[0].startswith("ray::ImplicitFunc") and info[1] == proc.pid, info
        os.kill(pid, signal.SIGKILL)
        out = proc.wait(timeout=DEADLINE_S)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    log = (tmp_path / "driver.log").read_text()
    assert out == 0, log[-3000:]

    summary = json.loads((exp / "summary.json").read_text())
    assert summary["complete"] is True and len(summary["trials"]) == 2
    failures = _failures(exp)
    for t in summary["trials"]:
        trial_dir = Path(t["path"])
        # Every report once, in order, up to the last step: a restart from step 0 would report
        # step 2 again. (A report the driver never got before the kill is made again after the
        # restart, but was never recorded, so it is not repeated either.)
        assert [h["step"] for h in t["history"]] == list(range(EVERY, STEPS + 1, EVERY)), t["history"]
        assert t["steps"] == STEPS and t["error"] is None
        pids = [int(r["pid"]) for r in _rows(trial_dir)]
        if trial_dir.name != victim.name:
            assert failures[t["trial_id"]] == 0 and len(set(pids)) == 1
            assert not (trial_dir / "error.txt").exists()
            continue
        # One failure, Tune's own record of it names the process killed.
        assert failures[t["trial_id"]] == 1, failures
        error = (trial_dir / "error.txt").read_text()
        assert error.count("Failure #") == 1 and f"pid: {pid}" in error, error[:500]
        # Restarted once, from its last reported checkpoint: the first report of the new process
        # follows the last one of the killed process by one interval.
        steps = [h["step"] for h in t["history"]]
        last_before = max(s for s, p in zip(steps, pids) if p == pid)
        first_after = min(s for s, p in zip(steps, pids) if p != pid)
        assert len(set(pids)) == 2 and pids[0] == pid
        assert first_after == last_before + EVERY

        # The steps trained twice: those the killed process trained past that checkpoint.
        tb = _tb_steps(trial_dir)
        before, after = sorted(tb.pop(pid)), sorted(s for steps in tb.values() for s in steps)
        assert len(tb) == 1  # one new process
        assert before == list(range(1, before[-1] + 1)), before
        assert after == list(range(last_before + 1, STEPS + 1)), after
        steps_lost = before[-1] - last_before
        assert 0 <= steps_lost <= EVERY, (before, last_before)
        print(f"\nkilled pid {pid} of {t['trial_id']} at step {before[-1]}, restarted from step {last_before}:"
              f" {steps_lost} steps lost; reports {steps}")


@pytest.mark.slow
def test_a_killed_driver_resumes_with_every_report_it_wrote(tmp_path: Path) -> None:
    """The driver SIGKILLed with its whole Ray cluster mid-search, at the hardest moment for
    retention: Tune saves its experiment state every 10 s or more, the trials checkpoint more
    often, so a driver killed between two saves leaves a state that names checkpoints older than
    the trials' newest. The resume goes on from those, so they must still be on disk: retention
    keeps only a trial's last two here, and the kill comes once a trial has two past the state's."""
    steps = 12
    space = make_space(tmp_path, "d", base_edits={"steps: 6": f"steps: {steps}"},
                       **{"num_samples: 2": "num_samples: 2\ncheckpoints: {keep_last: 2, keep_best: 0}"})
    exp = tmp_path / "runs" / "d"
    proc = _start(space, tmp_path)
    try:
        deadline, ahead = time.monotonic() + DEADLINE_S, None
        while ahead is None:
            if proc.poll() is not None:
                pytest.skip("no trial got two checkpoints ahead of the saved state before the search ended")
            assert time.monotonic() < deadline
            for trial in sorted(exp.glob("trial_*")):
                recorded, on_disk = _rows(trial), _checkpoint_steps(trial)
                if recorded and max(on_disk.values(), default=0) >= int(recorded[-1]["step"]) + 2 * EVERY:
                    ahead = trial
                    break
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and its Ray head: GCS, raylet, ...
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    # What the search had written at the kill. None of its processes may outlive it.
    trials = sorted(exp.glob("trial_*"))
    written = {t.name: [(int(r["step"]), float(r[OBJECTIVE])) for r in _rows(t)] for t in trials}
    on_disk = {t.name: max(_checkpoint_steps(t).values(), default=0) for t in trials}
    # result.json holds the same reports (Tune buffers it: at a kill it is often empty).
    for t in trials:
        lines = (t / "result.json").read_text().splitlines() if (t / "result.json").is_file() else []
        for line in lines:
            try:
                report = json.loads(line)
            except ValueError:
                continue  # the line the copy was cut in
            assert (report["step"], report[OBJECTIVE]) in written[t.name], (t.name, written[t.name])
    left, gone_s = _outlived(proc.pid)

    resumed = gantune("tune", str(space), "--resume", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = json.loads((exp / "summary.json").read_text())
    assert summary["complete"] is True
    # Every trial is there, and no other (a resume that could not read Tune's state would start
    # the search over, in the same folder, with new trials).
    assert sorted(f"trial_{t['trial_id']}" for t in summary["trials"]) == [t.name for t in trials]
    redone = {}
    for t in summary["trials"]:
        name, history = f"trial_{t['trial_id']}", t["history"]
        assert t["error"] is None, t["error"]
        assert history[-1]["step"] == steps
        # Every report written before the kill, as it was: same step, same value, in order.
        before = written[name]
        assert [(h["step"], h["value"]) for h in history[: len(before)]] == before, (before, history)
        if not before:
            continue  # nothing recorded: it starts over, as Tune knew it
        # Not from step 0: the first report after the resume follows a checkpoint the trial had
        # reported (a PBT exploit's, from its donor's), and skips none.
        first = history[len(before)]
        if "restored_from" in first:
            assert first["step"] == min(first["restored_step"] + EVERY, steps), first
        else:
            assert first["step"] - EVERY in {s for s, _ in before}, (before, first)
            assert first["step"] <= before[-1][0] + EVERY
        redone[name] = on_disk[name] - (first["step"] - EVERY) if "restored_from" not in first else None
    print(f"\nkilled with {ahead.name} at {written[ahead.name]} recorded and checkpoints up to step {on_disk[ahead.name]}"
          f" on disk; left at the kill: {sorted(c[:40] for c in left.values())}, gone {gone_s:.1f} s later;"
          f" steps redone after the resume: {redone}")


@pytest.mark.slow
def test_a_resume_refuses_tune_state_cut_short(tmp_path: Path) -> None:
    """A SIGKILLed driver left this (measured): Tune's searcher state in the experiment folder
    empty, cut short while Tune copied it there. A resume must not start the search over with new
    trials and report success: it goes on with the search's own trials, or refuses in one line."""
    space = make_space(tmp_path, "c", base_edits={"steps: 6": "steps: 2"},
                       **{"num_samples: 2": "num_samples: 1", PBT: "scheduler: none"})
    exp = tmp_path / "runs" / "c"
    first = gantune("tune", str(space), cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    trials = sorted(p.name for p in exp.glob("trial_*"))
    searcher = max(exp.glob("basic-variant-state-*.json"))
    searcher.write_bytes(b"")

    resumed = gantune("tune", str(space), "--resume", cwd=tmp_path)
    if resumed.returncode == 2:
        assert resumed.stderr.count("\n") == 1 and searcher.name in resumed.stderr, resumed.stderr
        assert sorted(p.name for p in exp.glob("trial_*")) == trials
        return
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = json.loads((exp / "summary.json").read_text())
    assert sorted(f"trial_{t['trial_id']}" for t in summary["trials"]) == trials, summary["trials"]
