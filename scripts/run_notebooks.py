"""Run every notebook in a folder top to bottom, as CI does (`make notebooks`).

    python scripts/run_notebooks.py notebooks            # run them all; exit 1 if any cell fails
    python scripts/run_notebooks.py notebooks --inplace  # also store the outputs in the .ipynb files

Each notebook runs in a fresh python3 kernel whose working directory is the notebook's folder. The kernel
is this script's own interpreter (run it with the venv's python): a "python3" kernelspec found elsewhere
(say ~/.local/share/jupyter) could point at a Python without kiln, so a private one is put first on
JUPYTER_PATH. A failing cell is reported with the notebook, the cell's number and the error; the last
line is always `notebooks: N passed, M failed`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

KERNEL = "python3"


def pin_kernel(scratch: Path) -> None:
    """A python3 kernelspec that starts this very interpreter, first on JUPYTER_PATH so it wins."""
    spec_dir = scratch / "kernels" / KERNEL
    spec_dir.mkdir(parents=True)
    spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "Python 3 (kiln runner)", "language": "python"}
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    os.environ["JUPYTER_PATH"] = os.pathsep.join(filter(None, [str(scratch), os.environ.get("JUPYTER_PATH")]))


def plain(text: str) -> str:
    """Without the terminal colours IPython puts into tracebacks (CI logs show them as noise)."""
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def first_line(text: str, limit: int = 200) -> str:
    line = (text or "").strip().splitlines()[0] if (text or "").strip() else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


def run(path: Path, timeout: int, inplace: bool, sockets: Path) -> str | None:
    """Execute one notebook; None when every cell ran, else a description of the failure."""
    try:
        nb = nbformat.read(path, as_version=4)
    except Exception as e:  # not JSON, not a notebook
        return f"cannot read the notebook: {type(e).__name__}: {first_line(str(e))}"
    # Unix sockets in a private folder rather than TCP on localhost: nothing else on the machine can
    # reach the kernel, and ipykernel does not warn about unencrypted TCP.
    km = KernelManager(kernel_name=KERNEL, transport="ipc", ip=str(sockets / "kernel"))
    failed: dict[str, object] = {}

    def on_cell_error(cell, cell_index, execute_reply) -> None:  # noqa: ANN001 (nbclient's hook)
        failed.setdefault("index", cell_index)

    client = NotebookClient(nb, km=km, kernel_name=KERNEL, timeout=timeout, allow_errors=False,
                            resources={"metadata": {"path": str(path.parent)}}, on_cell_error=on_cell_error)
    try:
        client.execute()
    except CellExecutionError as e:
        index = failed.get("index")
        where = "a cell"
        if isinstance(index, int):  # numbered from 1 over all cells, markdown included, as a reader counts
            where = f"cell {index + 1} of {len(nb.cells)} ({first_line(nb.cells[index].source, 60)!r})"
        return f"{where} raised {e.ename}: {first_line(str(e.evalue))}\n{plain(str(e))}"
    except CellTimeoutError as e:
        return f"a cell ran longer than {timeout} s: {first_line(str(e))}"
    except DeadKernelError as e:
        return f"the kernel died: {first_line(str(e))}"
    except Exception as e:  # no such kernel, a kernel that fails to start...: report it, go on with the others
        return f"could not run: {type(e).__name__}: {plain(str(e))}"
    finally:
        # nbclient leaves a kernel manager it was given running; each notebook gets a fresh kernel
        if km.has_kernel:
            km.shutdown_kernel(now=True)
    if inplace:
        nbformat.write(nb, path)
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", type=Path, help="folder holding the .ipynb files (not searched recursively)")
    ap.add_argument("--timeout", type=int, default=300, help="seconds one cell may take (default 300)")
    ap.add_argument("--inplace", action="store_true", help="write the executed notebooks (with outputs) back")
    args = ap.parse_args()

    notebooks = sorted(p for p in args.folder.glob("*.ipynb") if not p.name.startswith("."))
    if not notebooks:
        print(f"run_notebooks: no .ipynb files in {args.folder}", file=sys.stderr)
        print("notebooks: 0 passed, 0 failed")
        return 1
    passed = failed = 0
    with tempfile.TemporaryDirectory(prefix="kiln-kernels-") as scratch:
        pin_kernel(Path(scratch))
        for path in notebooks:
            start = time.perf_counter()
            print(f"running {path} ...", flush=True)
            error = run(path.resolve(), args.timeout, args.inplace, Path(scratch))
            seconds = time.perf_counter() - start
            if error is None:
                passed += 1
                print(f"  ok {path} ({seconds:.1f} s)", flush=True)
            else:
                failed += 1
                print(f"FAILED {path} ({seconds:.1f} s): {error}", file=sys.stderr, flush=True)
    print(f"notebooks: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
