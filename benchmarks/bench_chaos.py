"""The long chaos run: 5,000 rows, the fault mix, 20 SIGKILLs, then run to completion."""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.chaos import run_chaos
from benchmarks.common import FAULT_MIX, machine, sandbox, save, write_campaign

FAULTS = (*FAULT_MIX, "--latency-ms", "5", "--seed", "13")


def main() -> dict[str, Any]:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--kills", type=int, default=20)
    args = parser.parse_args()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, sandbox(*FAULTS) as server:
        extra = "[send]\nrate = 400\nburst = 20\nconcurrency = 16\nmax_attempts = 20\n"
        campaign = write_campaign(Path(tmp), args.rows, extra=extra)
        outcome = run_chaos(
            campaign,
            Path(tmp) / "j.sqlite",
            server.env(),
            server.deliveries,
            kills=args.kills,
            expected=args.rows,
            seed=5,
            max_wait_s=4.0,
        )
        outcome["sandbox_faults"] = server.stats()["faults"]
    results = {"machine": machine(), "rows": args.rows, **outcome, "seconds": round(time.perf_counter() - start, 1)}
    return save("chaos", results)


if __name__ == "__main__":
    main()
