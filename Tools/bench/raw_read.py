"""The physical floor: read every checkpoint file's bytes sequentially, in
128 KiB chunks into one reusable buffer, and do nothing with them.

    python3 Tools/bench/raw_read.py RUN_DIR [--json]

With the files in the page cache this measures memory bandwidth through
read(2), the least any reader of these files can spend on getting the bytes.

The chunk is `cat`'s (coreutils reads 128 KiB at a time): a buffer that stays
in the core's cache. A larger one makes the floor slower than it is, because
every byte copied out of the page cache is then written back to memory too:
on a 2-core EPYC VM (1 MiB L2 per core), 6.1 GB in the page cache took 0.56 s
in 128 KiB chunks and 2.7-3.4 s in 8 MiB chunks, all of it CPU time in the
copy, against 0.72 s for `cat`.
"""

from __future__ import annotations

import json
import os
import sys
import time

CHUNK = 128 << 10


def files_of(run_dir):
    return sorted(os.path.join(run_dir, n) for n in os.listdir(run_dir)
                  if not n.startswith(".") and os.path.isfile(os.path.join(run_dir, n)))


def read_all(paths, chunk=CHUNK):
    buffer = memoryview(bytearray(chunk))
    total = 0
    for path in paths:
        with open(path, "rb", buffering=0) as f:
            while True:
                n = f.readinto(buffer)
                if not n:
                    break
                total += n
    return total


def main(argv=None) -> int:
    args = sys.argv[1:] if argv is None else argv
    dirs = [a for a in args if not a.startswith("--")]
    if len(dirs) != 1:
        print("usage: raw_read.py RUN_DIR [--json]", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    total = read_all(files_of(dirs[0]))
    seconds = time.perf_counter() - t0
    if "--json" in args:
        print(json.dumps({"bytes": total, "seconds": seconds}))
    else:
        print(f"{total / 1e9:.3f} GB in {seconds:.3f} s = {total / 1e9 / seconds:.2f} GB/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
