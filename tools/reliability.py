"""`make reliability`: run the tests marked `reliability` and rewrite the README's reliability
table from their outcomes (between `<!-- reliability:start -->` and `<!-- reliability:end -->`).

Each marked test names its row (`@pytest.mark.reliability("case", tried=N)`, a key of `CASES`
below, which says what the row covers); a row's "tried"
counts the cases its tests run, "survived" those that passed (each asserts exit 2 and one
message, or a correct result, and that nothing was lost), "data lost" the failed ones, whose
assertions on lost data did not hold or did not run. The limits listed under the table are
read from the code's own constants, so they cannot drift from what the code refuses.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
START, END = "<!-- reliability:start -->", "<!-- reliability:end -->"

CASES = {  # a marker's case -> its row in the table, in this order
    'hostile pipeline files': 'hostile pipeline files: alias bombs and recursive aliases, 1,000-deep nesting, non-UTF-8 bytes, control characters, YAML tags, files over 1 MiB, 5,000-digit and sexagesimal numbers, a 10^7 x 10^5 planted source, a class named twice',
    'fuzzed pipeline files': 'fuzzed pipeline files: mutations of the demo (recursive aliases, huge integers and YAML 1.1 forms among the pieces), arbitrary bytes',
    'hostile data files': 'hostile data files: an npy header claiming 10^11 rows, a zero-row array, a zip-bomb npz, FIFOs and devices, dangling links and link loops, a folder named x.png, an image of another size, an image past Pillow\'s bomb guard, images beyond memory, a `classes:` list shorter than the target\'s ids',
    'silent guesses in tables': 'tables: a column named twice, ragged rows, empty / NaN / inf / non-numeric cells, empty or null classes, `0` and `00`, the label in `columns:`, a column in two fields, parquet nulls, 200,000-character cells, a file that is not a table',
    'fuzzed CSV files': 'fuzzed CSV files: mutations of a small table (separators, quotes, NaN, 1e400, `00`, NUL, 200,000-character cells)',
    'bad data files': 'bad data files: CSVs (empty, wrong delimiter, non-UTF-8, a non-numeric or NaN cell, no label column) and images (wrong size or mode, unreadable), each at the reader, and one of each through `run` (nothing registered, no experiment)',
    'hostile predict inputs': 'hostile `predict` inputs: wrong shapes, fields, columns and files, a big-endian array, NaN and inf rows, a served model sent NaN (HTTP 400)',
    'export over a folder': '`export --out` into a folder holding other files, over an earlier export, while stale',
    'kill -9 in a run': 'kill -9 during training, before registration, between registration and alias, after the alias: the next run converges',
    'kill -9 in a cutoff check': "kill -9 between a cutoff check's two tag writes: never a false fresh",
    'signals': 'SIGINT and SIGTERM while training, inspecting (opacity workers included), reporting, predicting, exporting or explaining: exit 130 / 143, nothing registered, no overview, output, export or page half-written',
    'corrupt artifacts': 'corrupt and deleted artifacts of current versions: stale INTEGRITY, repaired by `run`',
    'failing user code': 'user code raising or returning wrong shapes, NaN targets and outputs, a model over `max_memory_gb`: each at the step that finds it (before a run is opened, or in training), one `run` per kind (model, target, training)',
    'usage errors': 'usage errors (no arguments, unknown command or option)',
    'read-only registry': 'a read-only registry: `status` and `predict` work; `status --record`, `run`, `inspect` are one message',
    'full disk': "a disk that fills during `run` (the database, a version's artifacts): one message, the next run converges",
    'dead leases': 'killed lease holders (this host, another host, an expert the next run does not train): runs FAILED, leases deleted',
    'code outside the project': "a stored version tampered with: its spec.json naming a class from outside the project (refused before it is imported), its weights and manifest rewritten together (refused by the registry's record), an exported system's spec.json naming a class outside its own code/ folder (refused before it is imported)",
    'server authentication': "a server bound beyond loopback: an anonymous write refused (401), the admin's accepted",
}


def limits() -> list[str]:
    from moe_pipeline.data.files import max_array_bytes
    from moe_pipeline.errors import QUOTED
    from moe_pipeline.pipeline.loader import MAX_BYTES
    from moe_pipeline.pipeline.spec import MAX_PLANTED_CELLS
    from moe_pipeline.pipeline.yamltree import MAX_DEPTH, MAX_DIGITS, MAX_VALUES

    half = f"half this machine's memory ({max_array_bytes() / 2**30:.1f} GiB here)"
    return [f"a pipeline file: at most {MAX_BYTES >> 20} MiB, {MAX_DEPTH} levels of nesting, {MAX_VALUES:,} values "
            f"after aliases (recursive ones refused), integers of at most {MAX_DIGITS} digits; YAML 1.2 core "
            "rules (`1:30`, `no`, `on` stay strings)",
            f"a synthetic source: at most {MAX_PLANTED_CELLS:,} values (rows x columns)",
            f"an array a data file declares (npy/npz headers, zip members), a parquet file's needed columns (from its "
            f"footer), an image folder's images together (from the file list and `size:`): at most {half}, checked "
            "before anything is allocated; each image's size is read from its header before decoding",
            "a source that is not a regular file (a FIFO, a device, a dangling link) is refused before it is opened",
            f"a value from a data file is quoted by its first {QUOTED} characters and its length; a file that is not "
            "a table is not quoted at all"]


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "reliability.json"
        done = subprocess.run([sys.executable, "-m", "pytest", "tests", "-m", "reliability", "--ignore=tests/install",
                               "--ignore=tests/browser", "-q"], cwd=ROOT, env={**os.environ, "MOE_RELIABILITY_OUT": str(out)})
        results = json.loads(out.read_text()) if out.exists() else []
    rows: dict[str, dict] = {case: {"tried": 0, "survived": 0, "lost": 0, "tests": set()} for case in CASES}
    for result in results:
        if result["case"] not in rows:
            raise SystemExit(f"{result['test']}: marked with an unknown case {result['case']!r}; add it to CASES")
        row = rows[result["case"]]
        row["tried"] += result["tried"]
        row["survived"] += result["tried"] if result["passed"] else 0
        row["lost"] += 0 if result["passed"] else result["tried"]
        row["tests"].add(result["test"].split("::")[0].removeprefix("tests/"))
    lines = [START, "| case (tests) | tried | survived | data lost |", "|---|---|---|---|"]
    for case, row in rows.items():
        tests = ", ".join(f"`{t}`" for t in sorted(row["tests"])) or "**no test ran**"
        lines.append(f"| {CASES[case]} ({tests}) | {row['tried']:,} | {row['survived']:,} | {row['lost']:,} |")
    lines += ["", "Limits (from the code's constants):", ""] + [f"- {line}" for line in limits()] + [END]
    text = README.read_text()
    before, rest = text.split(START, 1)
    README.write_text(before + "\n".join(lines) + rest.split(END, 1)[1])
    print("\n".join(lines))
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
