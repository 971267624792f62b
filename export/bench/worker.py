"""The fresh-process side of ``kiln bench``: ``python -m tensorkiln.export.bench.worker KIND ARGS...`` runs one
measurement and prints its JSON as the last line on stdout (see :func:`~.machine.run_worker`, which starts it).

  * ``sgemm LIB SIZE THREADS``: the GFLOP/s of LIB's n x n fp32 matmul (:mod:`.peak`);
  * ``memory BACKEND CHECKPOINT EXPORT BATCH SEQ THREADS``: the backend's RSS figures (:mod:`.memory`).

Nothing in the package imports this module, so that ``-m`` runs it fresh.
"""

from __future__ import annotations

import json
import sys

from .memory import measure_memory
from .peak import sgemm_one


def main(argv: list[str]) -> None:
    kind = argv[0]
    if kind == "sgemm":
        lib, size, threads = argv[1], int(argv[2]), int(argv[3])
        print(json.dumps({"gflops": sgemm_one(lib, size, threads)}))
    elif kind == "memory":
        backend, checkpoint, export, batch, seq, threads = argv[1:7]
        print(json.dumps(measure_memory(backend, checkpoint, export, int(batch), int(seq), int(threads))))
    else:
        raise SystemExit(f"unknown worker {kind!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
