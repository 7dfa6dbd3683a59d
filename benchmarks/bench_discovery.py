"""discover() against a bare importlib.metadata scan, with 1,000 installed distributions.

Builds real distributions (``*.dist-info`` with METADATA, RECORD and, for most,
entry_points.txt) in a temporary folder put on ``sys.path``: most declare other groups
(console_scripts, pytest11, ...), a few have no entry points at all, and some tens declare
a ``dispatch.extensions`` entry pointing at a tiny module. Then, in the same run and
interleaved, it times:

* baseline: ``importlib.metadata.entry_points(group="dispatch.extensions")``;
* ``discover()`` with its scan cache cleared each time, extension modules already imported:
  the scan (the same ``entry_points`` call, plus reading name and version from METADATA of
  each distribution in the group and de-duplication), the switches, conflict
  resolution, ordering, and building and validating every extension object;
* ``discover()`` with every extension disabled (scan-only: the same as above minus the
  building), the fairest scan-to-scan comparison;
* ``discover()`` reusing its cached scan (what every later call in a process costs);
* once, apart: the first import of the extension modules.

Usage: ``python benchmarks/bench_discovery.py [--quick] [--dists N] [--repeat R]``.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

from dispatch_ext.config import Config
from dispatch_ext.discovery import GROUP, clear_cache, discover
from dispatch_ext.testing.distributions import make_distribution, on_sys_path

TARGET = 1.3

_EXTENSION_SOURCE = """\
class Extension:
    def __init__(self, **settings):
        self.settings = settings

    def on_job_completed(self, job, elapsed):
        pass

    def on_job_failed(self, job, error):
        pass
"""

_DESCRIPTION = "A package that does one thing well.\n\n" + "Longer description text. " * 40


def build_distributions(root: Path, count: int, every: int) -> int:
    """Write ``count`` distributions into ``root``; returns how many are extensions."""
    extensions = 0
    for i in range(count):
        name = f"bench-pkg-{i:04d}"
        if i % every == 0:
            extensions += 1
            module = f"bench_ext_{i:04d}"
            make_distribution(
                root,
                name,
                "1.0",
                entry_points={f"bench-{i:04d}": f"{module}:Extension"},
                modules={f"{module}.py": _EXTENSION_SOURCE},
                extra_entry_point_lines=f"[console_scripts]\nbench-{i:04d} = {module}:main\n",
            )
        elif i % 10 == 1:
            make_distribution(root, name, "2.3.1", modules={f"bench_lib_{i:04d}.py": ""})
        elif i % 10 == 2:
            make_distribution(
                root,
                name,
                "0.9",
                entry_points={f"plugin{i}": f"bench_lib_{i:04d}.plugin"},
                group="pytest11",
                extra_entry_point_lines=(
                    f"[console_scripts]\ntool{i} = bench_lib_{i:04d}.cli:main\n"
                    f"[gui_scripts]\ntool{i}-gui = bench_lib_{i:04d}.gui:main\n"
                ),
            )
        else:
            make_distribution(
                root,
                name,
                "1.2",
                entry_points={f"tool{i}": f"bench_lib_{i:04d}.cli:main"},
                group="console_scripts",
            )
        if i % 5 == 0:  # a realistic METADATA with a long description
            dist_info = next(root.glob(f"bench_pkg_{i:04d}-*.dist-info"))
            meta = dist_info / "METADATA"
            meta.write_text(meta.read_text() + "\n" + _DESCRIPTION, encoding="utf-8")
    return extensions


def measure(functions: dict[str, Callable[[], object]], repeat: int) -> dict[str, list[float]]:
    """Run every function ``repeat`` times, interleaved; seconds per call."""
    times: dict[str, list[float]] = {name: [] for name in functions}
    clock = time.perf_counter
    gc.collect()
    gc.disable()
    try:
        for _ in range(repeat):
            for name, function in functions.items():
                started = clock()
                function()
                times[name].append(clock() - started)
    finally:
        gc.enable()
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small and short, for CI smoke")
    parser.add_argument("--dists", type=int, default=None, help="distributions to build")
    parser.add_argument("--repeat", type=int, default=None, help="timed runs of each")
    args = parser.parse_args(argv)
    count = args.dists or (200 if args.quick else 1000)
    repeat = args.repeat or (15 if args.quick else 30)

    with tempfile.TemporaryDirectory(prefix="dispatch-bench-") as folder:
        root = Path(folder)
        started = time.perf_counter()
        extensions = build_distributions(root, count, every=30)
        print(
            f"built {count} distributions ({extensions} with {GROUP} entries) "
            f"in {time.perf_counter() - started:.1f}s under {root}"
        )
        with on_sys_path(root):
            installed = sum(1 for _ in metadata.distributions())
            config = Config()
            scan_only = Config(enable=())

            started = time.perf_counter()
            records = discover(config)
            first = time.perf_counter() - started
            loaded = sum(r.status == "loaded" for r in records)
            if loaded < extensions:
                print(f"error: only {loaded} of {extensions} extensions loaded", file=sys.stderr)
                return 2

            def baseline() -> object:
                return metadata.entry_points(group=GROUP)

            def full() -> object:
                clear_cache()
                return discover(config)

            def scan() -> object:
                clear_cache()
                return discover(scan_only)

            def cached() -> object:
                return discover(config)

            times = measure(
                {"baseline": baseline, "full": full, "scan": scan, "cached": cached}, repeat
            )

    median = {name: statistics.median(values) for name, values in times.items()}
    best = {name: min(values) for name, values in times.items()}
    base = median["baseline"]

    def row(label: str, name: str) -> str:
        return (
            f"  {label:<52} median {median[name] * 1e3:8.2f} ms  min {best[name] * 1e3:8.2f} ms"
            f"  {median[name] / base:5.2f}x"
        )

    print(f"{installed} distributions visible on sys.path; {repeat} interleaved runs each")
    print(row("importlib.metadata.entry_points(group=...) [baseline]", "baseline"))
    print(row(f"discover(): scan + build {loaded} extensions", "full"))
    print(row("discover(), all disabled: scan only", "scan"))
    print(row("discover(), scan reused from the cache", "cached"))
    print(f"  first discover(), importing the extension modules: {first * 1e3:.2f} ms (once)")
    ratio = median["full"] / base
    scan_ratio = median["scan"] / base
    verdict = "ok" if ratio <= TARGET else "OVER TARGET"
    print(f"ratio discover()/entry_points(): {ratio:.2f}x (target <= {TARGET}x: {verdict})")
    print(f"ratio scan-only discover()/entry_points(): {scan_ratio:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
