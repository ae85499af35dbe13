"""Code size per function of a wasm module, or the difference between two builds of it.

    python3 scripts/wasm_fn_sizes.py NEW.wasm [OLD.wasm]

Reads the code section and the `name` section, so give it the unstripped cargo output, not
wasm/pkg's: target/wasm32-unknown-unknown/wasm-core/kiln_wasm.wasm holds whichever of kiln_core
and kiln_train build.sh built last (rerun build.sh's cargo line for the one you want). With OLD,
prints both totals and the functions whose size changed most. No dependencies (twiggy is not on
this machine): how the 2026-12-03 session found what its change added to the small module.
"""
import sys


def leb128(b: bytes, i: int) -> tuple[int, int]:
    """An unsigned LEB128 number at b[i]: (value, index after it)."""
    value = shift = 0
    while True:
        byte = b[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, i


def skip_limits(b: bytes, i: int) -> int:
    flags = b[i]
    _, i = leb128(b, i + 1)
    return leb128(b, i)[1] if flags & 1 else i


def function_sizes(path: str) -> dict[str, int]:
    """Body size in bytes of each defined function, by its name (`f<k>` without a name)."""
    b = open(path, "rb").read()
    i, imported, sizes, names = 8, 0, [], {}
    while i < len(b):
        section, i = b[i], i + 1
        length, i = leb128(b, i)
        end = i + length
        if section == 2:  # imports: function imports shift the indices of defined functions
            count, j = leb128(b, i)
            for _ in range(count):
                for _ in range(2):  # module and field names
                    n, j = leb128(b, j)
                    j += n
                kind, j = b[j], j + 1
                if kind == 0:
                    _, j = leb128(b, j)
                    imported += 1
                elif kind == 1:  # table: element type, limits
                    j = skip_limits(b, j + 1)
                elif kind == 2:  # memory: limits
                    j = skip_limits(b, j)
                elif kind == 3:  # global: value type, mutability
                    j += 2
        elif section == 10:  # code
            count, j = leb128(b, i)
            for _ in range(count):
                n, j = leb128(b, j)
                sizes.append(n)
                j += n
        elif section == 0:  # custom: the "name" section's function names
            n, j = leb128(b, i)
            if b[j : j + n] == b"name":
                j += n
                while j < end:
                    sub, j = b[j], j + 1
                    n, j = leb128(b, j)
                    after = j + n
                    if sub == 1:
                        count, j = leb128(b, j)
                        for _ in range(count):
                            index, j = leb128(b, j)
                            n, j = leb128(b, j)
                            names[index] = b[j : j + n].decode(errors="replace")
                            j += n
                    j = after
        i = end
    return {names.get(imported + k, f"f{k}"): n for k, n in enumerate(sizes)}


def main() -> None:
    new = function_sizes(sys.argv[1])
    if len(sys.argv) < 3:
        for name, n in sorted(new.items(), key=lambda kv: -kv[1])[:30]:
            print(n, name[:150])
        return
    old = function_sizes(sys.argv[2])
    print("total", sum(new.values()), "was", sum(old.values()))
    change = {k: new.get(k, 0) - old.get(k, 0) for k in new.keys() | old.keys()}
    for name, d in sorted(change.items(), key=lambda kv: -abs(kv[1]))[:40]:
        print(f"{d:+} {new.get(name, 0)} {name[:150]}")


if __name__ == "__main__":
    main()
