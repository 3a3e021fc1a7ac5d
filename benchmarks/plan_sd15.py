"""The planner's SD1.5 figures at 512x512 (docs/memory.md): tuning with the CUDA defaults at 8/16/24
frames, what checkpointing and the math SDPA kernel would cost, and inversion/sampling at 24 frames.

    .venv/bin/python benchmarks/plan_sd15.py --json benchmarks/plan_sd15.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from tav import memory_plan as mp  # noqa: E402

JOBS = [
    mp.Job("tune", 24, 512, 512),
    mp.Job("tune", 16, 512, 512),
    mp.Job("tune", 8, 512, 512),
    mp.Job("tune", 24, 512, 512, checkpointing=False),
    mp.Job("tune", 8, 512, 512, attention="math"),
    mp.Job("tune", 24, 512, 512, precision="fp32"),
    mp.Job("invert", 24, 512, 512),
    mp.Job("sample", 24, 512, 512),
]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--json", help="write the plans here")
    args = p.parse_args()
    torch.set_num_threads(1)
    planner = mp.Planner(mp.sd15_configs())
    rows = []
    for job in JOBS:
        t0 = time.perf_counter()
        plan = planner.plan(job)
        seconds = time.perf_counter() - t0
        print(plan.table(), f"\n  ({seconds:.1f} s to plan)\n", flush=True)
        rows.append(
            {
                **dataclasses.asdict(job),
                **{k: getattr(plan, k) for k in ("weights", "optimizer", "gradients", "activations", "peak")},
                "allowance": plan.allowance,
                "total": plan.total,
                "phase": plan.phase,
                "plan_seconds": seconds,
            }
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"torch": torch.__version__, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
