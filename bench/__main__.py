"""`python -m bench NAME [--quick] [options]`: run one benchmark (or `all`), print its
measurements, end with one line `<name>: <value>`."""

from __future__ import annotations

import sys

from bench import registry
from bench.common import BenchError


def main(argv: list[str]) -> int:
    names = list(registry.BENCHMARKS)
    if not argv or argv[0] in ("-h", "--help"):
        print(f"usage: python -m bench {{{','.join(names)},all}} [--quick] [options]")
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    quick = "--quick" in rest
    rest = [a for a in rest if a != "--quick"]
    try:
        if name == "all":
            return registry.run_all(quick, rest)
        if name not in registry.BENCHMARKS:
            print(
                f"error: unknown benchmark '{name}' (known: {', '.join(names)}, all)",
                file=sys.stderr,
            )
            return 2
        registry.run_one(name, rest, quick)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
