"""One framework's side of a precision run, in its own process: ``python -m modbuild.precision.worker JOB RESULT``.

The job's ``side`` is ``hf`` (torch) or ``paddle``; the thread count is set in the environment by the parent
before this process starts (OMP / MKL / OpenBLAS) and again through each framework's own call. The result is
written as JSON; a crash writes its traceback there and exits 1."""

from __future__ import annotations

import sys
import traceback
from pathlib import Path

from modbuild.precision.common import load_job, rss, write_result


def main(argv: list[str]) -> int:
    job_path, result_path = Path(argv[0]), Path(argv[1])
    job = load_job(job_path)
    try:
        if job["side"] == "hf":
            from modbuild.precision.hf_side import main as side
        elif job["side"] == "paddle":
            from modbuild.precision.paddle_side import main as side
        else:
            raise ValueError(f"unknown side {job['side']!r}")
        result = side(job)
    except Exception as exc:  # noqa: BLE001 -- the parent reports it; a crash is never a pass
        traceback.print_exc()
        write_result(result_path, {"error": f"{type(exc).__name__}: {exc}", "rss": rss()})
        return 1
    write_result(result_path, result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
