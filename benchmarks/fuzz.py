"""Fuzz figures: seeded mutants of six containers (tests/fuzzing.py), indexed by one real job.

Two passes over the same mutants:

1. ``vidsearch index`` over the folder, as tests/test_fuzz.py runs it, with the tiny model:
   how many were indexed, how many failed and why (grouped), any outcome that is not sane
   (tests/fuzzing.py check), the job's wall and CPU time, and the peak memory of the job's
   process tree (sampled) and of any decode worker (its kernel-kept peak, VmHWM).
2. One decode worker (the job's own, vidsearch.indexer.workers) fed the mutants one at a time:
   the worst time and the worst peak memory for a single file, measured per file (the
   worker's VmHWM reset before each).

Usage: python benchmarks/fuzz.py [--per-container 34] [--first-seed 0] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from memory import tree_rss_mb  # noqa: E402


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    children.setdefault(int(f.read().rsplit(")", 1)[1].split()[1]), []).append(int(entry))
            except (OSError, IndexError, ValueError):
                continue
    out, stack = [], [pid]
    while stack:
        p = stack.pop()
        out += children.get(p, [])
        stack += children.get(p, [])
    return out


def _status_kb(pid: int, key: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _reason_group(reason: str) -> str:
    """A failure reason without its details: the words before the first parenthesis or figure."""
    return re.split(r" \(|\d", reason, maxsplit=1)[0].strip()


def job_pass(folder: Path, idx: Path, model: Path, mutants: dict) -> None:
    from fuzzing import ENV_1THREAD, check, index_argv, outcomes

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.monotonic()
    proc = subprocess.Popen(
        index_argv(folder, idx, model), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV_1THREAD
    )
    streams = {"stdout": proc.stdout, "stderr": proc.stderr}
    text: dict[str, str] = {}
    readers = [threading.Thread(target=lambda k=k, s=s: text.update({k: s.read()})) for k, s in streams.items()]
    for r in readers:
        r.start()
    peak_tree = 0.0
    hwm: dict[int, int] = {}  # each child's last reading: a child read between fork and exec shows the job's
    while proc.poll() is None:
        peak_tree = max(peak_tree, tree_rss_mb(proc.pid))
        hwm.update((p, kb) for p in _descendants(proc.pid) if (kb := _status_kb(p, "VmHWM")))
        time.sleep(0.05)
    wall = time.monotonic() - t
    for r in readers:
        r.join()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    stdout, stderr = text["stdout"], text["stderr"]
    got = outcomes(idx, stderr)
    failed = [o for o in got.values() if o.status == "failed"]
    print(f"job: exit {proc.returncode}; {stdout.strip()}")
    print(f"  {len(mutants)} mutants: {len(got) - len(failed)} indexed, {len(failed)} failed")
    for group, n in Counter(_reason_group(o.reasons[0]) for o in failed if o.reasons).most_common():
        print(f"    {n:4d}  {group}")
    stopped = sum(o.stopped for o in got.values())
    print(f"  {stopped} indexed only in part (decoding stopped part-way)")
    bad = {name: check(o) for name, o in got.items() if check(o)}
    print(f"  not sane: {len(bad)}")
    for name, why in sorted(bad.items()):
        print(f"    {name}: {why}; {mutants[name].steps}")
    longest = max((o for o in got.values() if o.status == "indexed"), key=lambda o: o.duration_s or 0)
    print(f"  longest indexed: {longest.name} {longest.duration_s:.2f}s, {len(longest.clips)} clips")
    print(f"  wall {wall:.1f}s, CPU {cpu:.1f}s (job and workers, user + system)")
    print(
        f"  peak RSS: the job's process tree {peak_tree:.0f} MB (sampled), its largest child (a decode worker) "
        f"{max(hwm.values()) / 1024:.0f} MB"
    )


def worker_pass(folder: Path, mutants: dict) -> None:
    """Each mutant through one decode worker: time and peak memory per file."""
    from fuzzing import CLIP_SECONDS, MAX_DECODE_MB, TIMEOUT_S

    from vidsearch.indexer.workers import DecodeSettings, DecodeTask, Done, Failed, WorkerPool

    settings = DecodeSettings(64, "bilinear", 16, CLIP_SECONDS, CLIP_SECONDS, max_memory_mb=MAX_DECODE_MB)
    pool = WorkerPool(1, settings, TIMEOUT_S)
    rows = []
    try:
        for token, name in enumerate(sorted(mutants)):
            wid = pool.idle()[0]
            w = pool.workers[wid]
            while not w.ready:  # its start is not the file's time
                pool.get(0.1)
            pid = w.proc.pid
            with open(f"/proc/{pid}/clear_refs", "w") as f:
                f.write("5")  # reset the worker's peak RSS
            cpu, t = _cpu_s(pid), time.monotonic()
            pool.assign(wid, DecodeTask(token, str(folder / name)))
            peak, outcome = 0, None
            while outcome is None:
                peak = max(peak, _status_kb(pid, "VmHWM"))
                msg = pool.get(0.02)
                if isinstance(msg, (Done, Failed)):
                    outcome = "done" if isinstance(msg, Done) else "failed"
                    peak = max(peak, _status_kb(pid, "VmHWM"))
                for _, reason in pool.reap():
                    outcome = reason
            wall = time.monotonic() - t
            cpu = _cpu_s(pid) - cpu if pool.workers.get(wid) else float("nan")
            rows.append((name, wall, cpu, peak / 1024, outcome))
    finally:
        pool.close()
    slowest = max(rows, key=lambda r: r[1])
    busiest = max(rows, key=lambda r: r[2])
    biggest = max(rows, key=lambda r: r[3])
    base = min(r[3] for r in rows)
    print(f"worker, one file at a time ({len(rows)} files):")
    print(
        f"  worst wall time: {slowest[0]} {slowest[1]:.2f}s ({slowest[4]}); median {_median([r[1] for r in rows]):.2f}s"
    )
    print(f"  worst CPU time: {busiest[0]} {busiest[2]:.2f}s; median {_median([r[2] for r in rows]):.2f}s")
    print(f"  worst peak RSS: {biggest[0]} {biggest[3]:.0f} MB (the lowest any file peaked at: {base:.0f} MB)")


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-container", type=int, default=34)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()

    from fuzzing import ORIGINALS, write_mutants, write_originals
    from helpers import make_checkpoint

    work = args.workdir or Path(tempfile.mkdtemp(prefix="vidsearch-fuzz-"))
    originals = write_originals(work / "originals")
    seeds = range(args.first_seed, args.first_seed + args.per_container)
    mutants = write_mutants(work / "mutants", originals, [(c, s) for s in seeds for c in ORIGINALS])
    model = make_checkpoint(work / "model")
    print(f"{len(mutants)} mutants of {', '.join(ORIGINALS)}, seeds {seeds.start}-{seeds.stop - 1}, in {work}")
    job_pass(work / "mutants", work / "idx", model, mutants)
    worker_pass(work / "mutants", mutants)


if __name__ == "__main__":
    main()
