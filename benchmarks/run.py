"""`make bench`: run every benchmark, print one table, write benchmarks/results.json and the
README's table of results (between its `bench:start` and `bench:end` markers).

Benchmarks are not tests: nothing here fails the build. `python benchmarks/run.py bench_x`
runs one module and replaces only its rows in results.json (each row names its module and
when it ran). Each compares side by side in one
process (or fresh processes started from it) and reports ratios, since absolute times on a
shared machine drift. `python benchmarks/run.py --readme` rewrites the README's table from
results.json without running anything.
"""
from __future__ import annotations

import datetime
import importlib
import json
import os
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODULES = ["bench_agop", "bench_train", "bench_status", "bench_cutoff", "bench_memory", "bench_demo", "bench_commands", "bench_ray", "bench_use",
           "bench_inspect", "bench_tables", "bench_findings", "bench_folder", "bench_scale", "bench_stream", "bench_opacity"]


def machine() -> dict:
    import torch

    return {"python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "torch_threads": torch.get_num_threads(),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


README = HERE.parent / "README.md"
START, END = "<!-- bench:start -->", "<!-- bench:end -->"


def write_readme_table(rows: list[dict]) -> None:
    """The README's table: each result with its goal and the day it was measured; notes stay in
    results.json (they are long)."""
    lines = [START, "| benchmark | value | goal | met | module, day |", "|---|---|---|---|---|"]
    for row in rows:
        cells = [row["benchmark"], f"{row['value']} {row['unit']}", row["goal"], "yes" if row["met"] else "**no**",
                 f"`{row.get('module', '?')}`, {row.get('machine_date', '?')[:10]}"]
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
    text = README.read_text()
    if START not in text or END not in text:
        print(f"{README}: no {START} ... {END} markers; table not written", file=sys.stderr)
        return
    before, rest = text.split(START, 1)
    README.write_text(before + "\n".join(lines) + "\n" + END + rest.split(END, 1)[1])


def main(names: list[str]) -> None:
    from rich.console import Console
    from rich.table import Table

    sys.path.insert(0, str(HERE))
    os.chdir(HERE.parent)
    rows, started = [], time.perf_counter()
    for name in names or MODULES:
        t0 = time.perf_counter()
        rows += [{**row, "module": name, "machine_date": machine()["date"]} for row in importlib.import_module(name).run()]
        print(f"{name}: {time.perf_counter() - t0:.0f}s", file=sys.stderr)
    path = HERE / "results.json"
    if names and path.exists():  # a partial run replaces its modules' rows and keeps the others'
        kept = [row for row in json.loads(path.read_text())["results"] if row.get("module") not in names]
        rows = kept + rows
    table = Table(title="moe-pipeline benchmarks")
    for column in ("benchmark", "value", "goal", "met", "note"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(row["benchmark"], f"{row['value']} {row['unit']}", row["goal"], "yes" if row["met"] else "NO",
                      row["note"])
    Console(width=220).print(table)
    result = {"machine": machine(), "seconds": round(time.perf_counter() - started, 1), "results": rows,
              "modules_run": names or MODULES}
    (HERE / "results.json").write_text(json.dumps(result, indent=2))
    write_readme_table(rows)
    print(f"wrote {HERE / 'results.json'} and the README's table ({result['seconds']} s)")


if __name__ == "__main__":
    if sys.argv[1:] == ["--readme"]:
        write_readme_table(json.loads((HERE / "results.json").read_text())["results"])
    else:
        main(sys.argv[1:])
