"""Timing, memory and the results table: what every stage benchmark shares.

A benchmark row is one setting of one stage on one model: its wall time for
``units`` units of work (iterations, images, prompts, jobs), the peak resident
memory while it ran (sampled from /proc, so each row has its own peak, not the
process's), the peak GPU memory (CUDA's allocator, reset per row) and, for a
candidate, the speed ratio against the baseline that did the same work in the
same run.
"""
from __future__ import annotations

import dataclasses
import os
import platform
import statistics
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable

RESULTS = Path(__file__).resolve().parent / "results"


@dataclasses.dataclass
class Row:
    stage: str
    model: str
    setting: str
    units: float                 # work done: iterations, images, prompts, jobs
    unit: str                    # "it", "img", "prompt", "job"
    wall_s: float                # median over repeats
    peak_rss_mb: float | None = None
    peak_gpu_mb: float | None = None
    repeats: int = 1
    baseline: str | None = None  # the setting this row is compared with
    speedup: float | None = None  # baseline's seconds per unit / this row's
    target: str | None = None
    met: bool | None = None
    note: str = ""

    @property
    def throughput(self) -> float | None:
        return self.units / self.wall_s if self.wall_s > 0 else None

    @property
    def seconds_per_unit(self) -> float | None:
        return self.wall_s / self.units if self.units else None


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class PeakRSS:
    """Samples this process's resident memory every few milliseconds while a block runs."""

    def __init__(self, every_s: float = 0.005):
        self.every_s, self.peak = every_s, 0.0
        self._stop = threading.Event()

    def _sample(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_mb())
            time.sleep(self.every_s)

    def __enter__(self):
        self.peak = _rss_mb()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_mb())


def _sync():
    import torch
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _release_free_memory():
    """Collect garbage and hand freed heap back to the OS, so a row's peak RSS is not the previous row's."""
    import ctypes
    import gc
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:   # not glibc
        pass


def measure(fn: Callable[[], object]) -> tuple[float, float, float | None, object]:
    """(wall seconds, peak RSS MB, peak GPU MB or None, fn's result) of one call."""
    import torch
    _release_free_memory()
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    with PeakRSS() as rss:
        start = time.perf_counter()
        out = fn()
        _sync()
        wall = time.perf_counter() - start
    gpu = torch.cuda.max_memory_allocated() / 2**20 if cuda else None
    return wall, rss.peak, gpu, out


def compare(cases: dict[str, Callable[[int], object]], repeats: int = 1) -> dict[str, dict]:
    """Run each case ``repeats`` times, interleaved (a, b, a, b: drift in machine load hits both alike).

    Each case is called with the repeat's index (0, 1, ...), e.g. to use it as the seed.
    Returns name -> {wall_s (median), walls, peak_rss_mb, peak_gpu_mb (max over repeats), results}.
    """
    out = {name: {"walls": [], "rss": [], "gpu": [], "results": []} for name in cases}
    for r in range(repeats):
        for name, fn in cases.items():
            wall, rss, gpu, result = measure(lambda: fn(r))
            o = out[name]
            o["walls"].append(wall)
            o["rss"].append(rss)
            o["gpu"].append(gpu)
            o["results"].append(result)
    return {name: {"wall_s": statistics.median(o["walls"]), "walls": o["walls"], "peak_rss_mb": max(o["rss"]),
                   "peak_gpu_mb": None if o["gpu"][0] is None else max(o["gpu"]), "results": o["results"]}
            for name, o in out.items()}


def rows_from(stage: str, model: str, measured: dict[str, dict], units: dict[str, float] | float, unit: str,
              baseline: str | None = None, target: Callable[[Row], tuple[str, bool]] | None = None,
              notes: dict[str, str] | None = None) -> list[Row]:
    """Rows of one comparison; each non-baseline row gets its speedup over ``baseline``."""
    rows = []
    for name, m in measured.items():
        n = units[name] if isinstance(units, dict) else units
        rows.append(Row(stage, model, name, n, unit, m["wall_s"], m["peak_rss_mb"], m["peak_gpu_mb"],
                        repeats=len(m["walls"]), note=(notes or {}).get(name, "")))
    if baseline is not None:
        base = next(r for r in rows if r.setting == baseline)
        for r in rows:
            if r is not base:
                r.baseline, r.speedup = baseline, base.seconds_per_unit / r.seconds_per_unit
    if target is not None:
        for r in rows:
            if r.setting != baseline:
                verdict = target(r)
                if verdict is not None:
                    r.target, r.met = verdict
    return rows


# --- the machine ---------------------------------------------------------------------------------

def machine() -> dict:
    """What the numbers were measured on: CPU, cores, threads, GPU, package versions."""
    import torch

    from eraselab.runtime import device, versions
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).parent).stdout.strip() or None
    except OSError:
        commit = None
    return {"host": platform.node(), "cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"), "device": device(), "gpu": gpu,
            "load_average": os.getloadavg()[0], "commit": commit,
            "started_at": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), **versions()}


# --- writing the table ---------------------------------------------------------------------------

COLUMNS = ["stage", "model", "setting", "units", "unit", "wall_s", "s_per_unit", "throughput_per_s",
           "peak_rss_mb", "peak_gpu_mb", "baseline", "speedup", "target", "met", "repeats", "note"]


def as_records(rows: list[Row]) -> list[dict]:
    recs = []
    for r in rows:
        d = dataclasses.asdict(r)
        d["s_per_unit"], d["throughput_per_s"] = r.seconds_per_unit, r.throughput
        recs.append({c: d.get(c) for c in COLUMNS})
    return recs


def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "yes" if v else "**no**"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
    return str(v).replace("|", "/")


def markdown(records: list[dict], columns: list[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_fmt(r.get(c)) for c in columns) + " |" for r in records]
    return "\n".join(lines)


MD_COLUMNS = ["stage", "model", "setting", "units", "unit", "wall_s", "s_per_unit", "throughput_per_s",
              "peak_rss_mb", "peak_gpu_mb", "speedup", "target", "met", "note"]


def write(rows: list[Row], info: dict, extra: dict[str, str], name: str = "bench") -> tuple[Path, Path]:
    """bench/results/<name>.csv (every column) and <name>.md (machine, table, extra sections)."""
    import csv
    RESULTS.mkdir(exist_ok=True)
    records = as_records(rows)
    csv_path, md_path = RESULTS / f"{name}.csv", RESULTS / f"{name}.md"
    with open(csv_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS + ["machine"])
        w.writeheader()
        machine_line = "; ".join(f"{k}={v}" for k, v in info.items())
        for rec in records:
            w.writerow({**{k: ("" if v is None else v) for k, v in rec.items()}, "machine": machine_line})
    md = ["# eraselab benchmarks", "",
          "Machine: " + ", ".join(f"{k} `{v}`" for k, v in info.items() if v is not None), "",
          "speedup = the baseline's seconds per unit / the row's, both measured in this run "
          "(baseline rows have none). Empty GPU column: no GPU.", "",
          markdown(records, MD_COLUMNS), ""]
    for title, body in extra.items():
        md += [f"## {title}", "", body, ""]
    md_path.write_text("\n".join(md))
    return csv_path, md_path
