"""Run the benchmark rows, print one table, write JSON (and the table) under benchmarks/results/.

    python -m benchmarks [--quick] [--only 1,3]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path

from benchmarks import common

RESULTS = Path(__file__).resolve().parent / "results"


def rows(quick: bool, stores: list[str]):
    from benchmarks import (
        compression,
        gpu_sharing,
        occupancy,
        orchestration,
        resources,
        resume,
        search,
        startup,
        training,
        warm_start,
    )

    yield (1,), lambda: [orchestration.orchestration_efficiency(quick, [s for s in stores if s != "mysql"])]
    yield (2,), lambda: [orchestration.store_throughput(quick, ["sqlite"] if quick else stores)]
    yield (3, 4), lambda: list(training.training_throughput(quick))
    yield (5,), lambda: [resources.preprocessing_cache(quick)]
    yield (6,), lambda: [resources.worker_memory(quick)]
    yield (7,), lambda: [search.search_efficiency(quick)]
    yield (8,), lambda: [startup.startup(quick)]
    yield (9,), lambda: [occupancy.slot_occupancy(quick)]
    yield (10,), lambda: [compression.compression_sweep(quick)]
    yield (11,), lambda: [warm_start.warm_start(quick)]
    yield (12,), lambda: [resume.resume_after_cuts(quick)]
    yield (13,), lambda: [gpu_sharing.gpu_sharing(quick)]


def table(results: list[common.Row]) -> str:
    head = "| # | what | sweeper | compared with | ratio | target | met |\n|---|---|---|---|---|---|---|"
    lines = [head]
    for r in results:
        met = {True: "yes", False: "**no**", None: r.why_unjudged or "n/a"}[r.met]
        lines.append(f"| {r.number} | {r.what} | {r.ours} | {r.baseline} | {r.ratio} | "
                     f"{r.target} | {met} |")
    return "\n".join(lines)


def machine() -> dict:
    import psutil

    return {"python": platform.python_version(), "cpus": os.cpu_count(),
            "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "platform": platform.platform(), "processor": platform.processor() or platform.machine()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller sizes: a few minutes")
    parser.add_argument("--only", default=None, help="row numbers, e.g. 1,3")
    args = parser.parse_args(argv)
    only = {int(n) for n in args.only.split(",")} if args.only else None
    stores = []
    for kind in ("sqlite", "postgresql", "mysql"):
        why = common.server_available(kind)
        if why is None:
            stores.append(kind)
        else:
            print(f"note: {kind} not reachable ({why}); its rows run without it", flush=True)
    started = time.time()
    results: list[common.Row] = []
    for numbers, run in rows(args.quick, stores):
        if only and not only & set(numbers):
            continue
        print(f"row {'+'.join(map(str, numbers))} ...", flush=True)
        t = time.time()
        try:
            results.extend(run())
        except Exception as e:  # one broken row must not lose the others
            traceback.print_exc()
            results.extend(common.Row(n, f"row {n} failed", "-", "-", "-", "-", None,
                                      {"error": repr(e)}) for n in numbers)
        print(f"  done in {time.time() - t:.0f}s", flush=True)
    text = table(results)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    kind = "quick" if args.quick else "full"
    record = {"when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "mode": kind, "stores": stores,
              "machine": machine(), "seconds": round(time.time() - started),
              "rows": [dataclasses.asdict(r) for r in results]}
    path = RESULTS / f"{stamp}-{kind}.json"
    path.write_text(json.dumps(record, indent=1, default=str))
    if not only:  # the table of a whole run; some rows alone would replace it with a part
        (RESULTS / f"latest-{kind}.md").write_text(text + "\n")
    print(f"results: {path} ({record['seconds']}s)")
    return 0 if all(r.met is not False for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
