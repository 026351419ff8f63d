"""Write a synthetic evaluation table (L blocks, N masks from the published strata) in the
project's format, to time `fit-surrogate` + `shapley` at the published scale without a model.

The NLL of a mask is a pairwise function of the removed blocks (random but seeded), so the
utility PPL_full / PPL_mask behaves like a layer-pruning game.

Usage: python synthetic_evaluations.py OUT.parquet [--blocks 32] [--masks 8000] [--seed 0]
"""

import argparse
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out")
    parser.add_argument("--blocks", type=int, default=32)
    parser.add_argument("--masks", type=int, default=8000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    n = args.blocks
    strata = sorted({max(1, min(n - 1, round(k * n / 32))) for k in (2, 5, 8, 11, 14)})
    damage = rng.gamma(2.0, 0.05, size=n)
    pairs = np.triu(rng.normal(0, 0.01, size=(n, n)), 1)
    full_nll = 3.0
    from math import comb

    # Equal shares, each stratum capped at its number of masks (as sample-masks allocates).
    room = {k: comb(n, k) for k in strata}
    want = {k: 0 for k in strata}
    while sum(want.values()) < args.masks and any(want[k] < room[k] for k in strata):
        for k in strata:
            if want[k] < room[k] and sum(want.values()) < args.masks:
                want[k] += 1
    seen, rows = set(), []
    plan = [k for k in strata for _ in range(want[k])]
    while len(rows) < len(plan):
        k = plan[len(rows)]
        removed = tuple(sorted(rng.choice(n, size=k, replace=False)))
        if removed in seen:
            continue
        seen.add(removed)
        r = np.zeros(n)
        r[list(removed)] = 1
        nll = full_nll + r @ damage + r @ pairs @ r
        kept = [not bool(x) for x in r]
        rows.append({"mask_id": "".join("1" if x else "0" for x in kept), "kept": kept,
                     "num_removed": k, "nll": nll, "ppl": float(np.exp(nll)),
                     "utility": float(np.exp(full_nll - nll)), "tokens_scored": 1270, "seconds": 0.0})
    schema = pa.schema([("mask_id", pa.string(), False),
                        ("kept", pa.list_(pa.field("item", pa.bool_(), False)), False),
                        ("num_removed", pa.uint32(), False), ("nll", pa.float64(), False),
                        ("ppl", pa.float64(), False), ("utility", pa.float64(), False),
                        ("tokens_scored", pa.uint64(), False), ("seconds", pa.float64(), False)])
    metadata = {"layerprune.table": "evaluations", "layerprune.format_version": "1",
                "layerprune.tool": "synthetic_evaluations.py", "layerprune.version": "0.1.0",
                "layerprune.args": json.dumps(["synthetic_evaluations.py"]), "layerprune.seed": str(args.seed),
                "layerprune.inputs": "{}", "layerprune.num_blocks": str(n), "layerprune.model_id": "synthetic",
                "layerprune.dataset_id": "synthetic", "layerprune.full_model_nll": repr(full_nll),
                "layerprune.complete": "true"}
    table = pa.Table.from_pylist(rows, schema=schema).replace_schema_metadata(metadata)
    pq.write_table(table, args.out)
    print(f"wrote {args.out}: {len(rows)} masks over {n} blocks, strata {strata}")


if __name__ == "__main__":
    main()
