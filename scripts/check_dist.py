"""Checks what `make dist` wrote against what each package must hold, and prints the sizes.

    python scripts/check_dist.py dist/kiln-*.whl dist/kiln-*.tar.gz dist/kiln-wasm-*.tgz

- the wheel: every module of py-bindings/python/kiln, the stubs and py.typed, one abi3 extension,
  the license, the version of the workspace Cargo.toml; and why it got its manylinux tag (the newest
  glibc symbol versions the extension links, read with objdump);
- the sdist: the Rust sources of kiln-core and kiln-py with Cargo.lock, the Python sources, and a
  manifest cargo resolves offline;
- the npm tarball: exactly the files package.json lists, plus package.json, README.md and LICENSE,
  nothing else, at the same version.
Exit 1 with every problem listed when something is off.
"""

from __future__ import annotations

import gzip
import json
import re
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
problems: list[str] = []


def check(ok: bool, message: str) -> None:
    if not ok:
        problems.append(message)


def version() -> str:
    return subprocess.run(["bash", str(ROOT / "scripts/version.sh")], check=True, capture_output=True,
                          text=True).stdout.strip()


def mb(n: int) -> str:
    return f"{n / 1e6:.2f} MB"


def glibc_floor(so_bytes: bytes) -> str:
    """The symbols behind the wheel's glibc floor: the two newest GLIBC_x.y versions and who needs them."""
    with tempfile.NamedTemporaryFile(suffix=".so") as f:
        f.write(so_bytes)
        f.flush()
        try:
            dump = subprocess.run(["objdump", "-T", f.name], check=True, capture_output=True, text=True).stdout
        except (OSError, subprocess.CalledProcessError):
            return "(objdump unavailable: symbols not listed)"
    needs: dict[tuple[int, ...], list[str]] = {}
    for line in dump.splitlines():
        m = re.search(r"\(GLIBC_([0-9.]+)\)\s+(\S+)$", line) or re.search(r"GLIBC_([0-9.]+)\s+(\S+)$", line)
        if m:
            needs.setdefault(tuple(int(p) for p in m.group(1).split(".")), []).append(m.group(2))
    newest = sorted(needs)[-2:]
    return "; ".join(f"glibc {'.'.join(map(str, v))}: {', '.join(sorted(set(needs[v]))[:6])}" for v in reversed(newest))


def check_wheel(path: Path, want: str) -> None:
    name = path.name
    check(name.startswith(f"kiln-{want}-cp39-abi3-"), f"wheel: {name} is not kiln {want} for abi3 (cp39-abi3)")
    tag = name.removesuffix(".whl").split("-")[-1]
    check(tag.startswith("manylinux"), f"wheel: platform tag {tag} is not a manylinux tag")
    with zipfile.ZipFile(path) as z:
        files = set(z.namelist())
        expected = {f"kiln/{p.relative_to(ROOT / 'py-bindings/python/kiln').as_posix()}"
                    for p in (ROOT / "py-bindings/python/kiln").rglob("*")
                    if p.is_file() and p.suffix in (".py", ".pyi", ".typed") and "__pycache__" not in p.parts}
        missing = sorted(expected - files)
        check(not missing, f"wheel: missing {missing}")
        sos = [f for f in files if f.startswith("kiln/_kiln") and f.endswith(".so")]
        check(sos == ["kiln/_kiln.abi3.so"], f"wheel: one abi3 extension kiln/_kiln.abi3.so expected, found {sos}")
        check(f"kiln-{want}.dist-info/licenses/LICENSE" in files, "wheel: no LICENSE in the dist-info")
        meta = z.read(f"kiln-{want}.dist-info/METADATA").decode()
        check(f"\nVersion: {want}\n" in meta, f"wheel: METADATA does not say Version: {want}")
        deps = re.findall(r"^Requires-Dist: ([^;\n]+)$", meta, flags=re.M)
        so = z.read(sos[0]) if sos else b""
    print(f"{name}: {mb(path.stat().st_size)} ({mb(len(so))} extension unpacked); {len(files)} files")
    print(f"  tag {tag}: the oldest policy whose glibc has every symbol version the extension links")
    print(f"  ({glibc_floor(so)}); built against this machine's glibc")
    print(f"  runtime dependencies: {', '.join(d.strip() for d in deps)}")


def check_sdist(path: Path, want: str) -> None:
    with tarfile.open(path) as t:
        names = {n.split("/", 1)[1] for n in t.getnames() if "/" in n}
        for needed in ("Cargo.toml", "Cargo.lock", "pyproject.toml", "LICENSE", "core/Cargo.toml", "core/src/lib.rs",
                       "py-bindings/Cargo.toml", "py-bindings/src/lib.rs", "python/kiln/__init__.py",
                       "python/kiln/_kiln.pyi", "python/kiln/py.typed"):
            check(needed in names, f"sdist: {needed} is missing")
        check(not any(n.startswith(("wasm/", "web-demo/", "target/")) for n in names),
              "sdist: carries wasm/, web-demo/ or target/")
        with tempfile.TemporaryDirectory() as scratch:
            t.extractall(scratch, filter="data")
            top = Path(scratch) / f"kiln-{want}"
            r = subprocess.run(["cargo", "metadata", "--offline", "--format-version", "1", "--no-deps",
                                "--manifest-path", str(top / "py-bindings/Cargo.toml")], capture_output=True, text=True)
            check(r.returncode == 0, f"sdist: cargo cannot read its manifest: {r.stderr.strip()[-400:]}")
    print(f"{path.name}: {mb(path.stat().st_size)}; {len(names)} files (kiln-core and kiln-py sources, Cargo.lock)")


def check_tarball(path: Path, want: str) -> None:
    pkg = json.loads((ROOT / "wasm/pkg/package.json").read_text())
    with tarfile.open(path) as t:
        members = {m.name.removeprefix("package/"): m for m in t.getmembers() if m.isfile()}
        shipped = json.loads(t.extractfile(members["package.json"]).read()) if "package.json" in members else {}
        version_js = t.extractfile(members["version.js"]).read().decode() if "version.js" in members else ""
        wasm = {n: len(gzip.compress(t.extractfile(m).read(), 9)) for n, m in members.items() if n.endswith(".wasm")}
    expected = set(pkg["files"]) | {"package.json", "README.md", "LICENSE"}
    check(set(members) == expected,
          f"npm tarball: missing {sorted(expected - set(members))}, unexpected {sorted(set(members) - expected)}")
    check(shipped.get("version") == want, f"npm tarball: version {shipped.get('version')}, the workspace says {want}")
    check(f"export const version = '{want}';" in version_js, f"npm tarball: version.js does not say {want}")
    for needed in ("index.d.ts", "worker.d.ts", "train.d.ts", "kiln_core_bg.wasm", "kiln_core_relaxed_bg.wasm", "kiln_train_bg.wasm", "kiln_wasm_bg.wasm"):
        check(needed in members, f"npm tarball: {needed} is missing")
    print(f"{path.name}: {mb(path.stat().st_size)}; {len(members)} files: {', '.join(sorted(members))}")
    print("  " + ", ".join(f"{n} {mb(members[n].size)} ({mb(g)} gzip)" for n, g in sorted(wasm.items())))


def main() -> int:
    wheel, sdist, tarball = (Path(a) for a in sys.argv[1:4])
    want = version()
    check_wheel(wheel, want)
    check_sdist(sdist, want)
    check_tarball(tarball, want)
    for p in problems:
        print(f"dist: {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
