"""The CLI ends without the interpreter's teardown, but as sys.exit would for everything a
user sees: the exit code, every byte of output, and the exit handlers' work."""
import subprocess
import sys
from pathlib import Path


def test_exit_keeps_the_code_the_output_and_the_exit_handlers(tmp_path: Path):
    marker = tmp_path / "handler-ran"
    script = (
        "import atexit, sys\n"
        "from pathlib import Path\n"
        "from moe_pipeline.cli.app import _exit_without_teardown\n"
        f"atexit.register(lambda: Path({str(marker)!r}).write_text('yes'))\n"
        "sys.stdout.write('x' * 300000)\n"  # buffered, not yet written when it exits
        "sys.stderr.write('last words')\n"
        "_exit_without_teardown(3)\n"
        "print('never')\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 3
    assert proc.stdout == "x" * 300000
    assert proc.stderr == "last words"
    assert marker.read_text() == "yes"
