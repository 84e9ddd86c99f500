"""Materialising a training stream as a ``datasets.Dataset``: time and peak memory, side by side with the obvious path.

Baseline: gather each window's numpy arrays in per-column lists and call ``datasets.Dataset.from_dict`` (what
``PackedStream.to_dataset`` did before; ``datasets`` converts every token to a Python int and then hashes the whole
table for its fingerprint). Measured: ``PackedStream.to_dataset`` (numpy blocks handed to Arrow, fingerprint
from the stream's settings), with its labels and without them (``labels=False``, what ``hf-capacity train`` builds:
its collator rebuilds the labels from the mask). Each side runs in its own fresh process (peak RSS is per process),
on the capacity-law data (bioD, K=1, C=16, D=T=1000, context 512); all must hold the same windows (checked by a hash
of the ids and mask columns; the two with labels also of the labels). Rounds alternate the sides; medians
reported, with the finished table's bytes a token.

    OMP_NUM_THREADS=1 taskset -c 0 python benchmarks/bench_dataset_build.py            # N 4,400 × 100 exposures
    python benchmarks/bench_dataset_build.py --N 1500 --exposures 20 --rounds 1       # quick
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys

CHILD = r"""
import hashlib, json, resource, sys, time
import datasets, pyarrow  # imported before measuring: both sides need them
from hf_capacity.data import KnowledgeData
from hf_capacity.data.population import BioDPopulation
side, n, e = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
data = KnowledgeData.create(BioDPopulation(n, 1, 16, 1000, 1, 1000, seed=0), vocab_size=2048)
stream = data.stream(e, 512)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
if side == "baseline":
    columns = {k: [] for k in stream.features()}
    for item in stream:
        for k in columns:
            columns[k].append(item[k])
    ds = datasets.Dataset.from_dict(columns, features=stream.features())
else:
    ds = stream.to_dataset(progress=False, labels=side != "to_dataset_no_labels")
seconds = time.perf_counter() - t0
grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024
digests = {}
for k in ds.column_names:  # the table's content, whatever its chunking
    digest = hashlib.sha256()
    column = ds.data.column(k).combine_chunks()
    for part in column.flatten(), column.offsets:
        digest.update(part.to_numpy(zero_copy_only=False).tobytes())
    digests[k] = digest.hexdigest()
print(json.dumps({"seconds": seconds, "grown": grown, "tokens": ds.num_rows * 512, "digests": digests,
                  "table": ds.data.nbytes}))
"""


def run(side: str, n: int, exposures: int) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, side, str(n), str(exposures)], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--N", type=int, default=4400, help="people")
    parser.add_argument("--exposures", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    results: dict[str, list[dict]] = {"baseline": [], "to_dataset": [], "to_dataset_no_labels": []}
    for _ in range(args.rounds):
        for side in results:
            results[side].append(run(side, args.N, args.exposures))
    for column in ("input_ids", "attention_mask", "labels"):
        digests = {r["digests"][column] for rs in results.values() for r in rs if column in r["digests"]}
        assert len(digests) == 1, f"the paths built different {column} columns"
    tokens = results["to_dataset"][0]["tokens"]
    med = {side: (statistics.median(r["seconds"] for r in rs), statistics.median(r["grown"] for r in rs),
                  rs[0]["table"]) for side, rs in results.items()}
    print(f"bioD(N={args.N:,}, K=1, C=16, D=T=1000), {args.exposures} exposures, context 512: {tokens / 1e6:.1f}M "
          f"tokens; {platform.processor() or platform.machine()}, {args.rounds} rounds, a fresh process each\n")
    print("| path | median s | M tokens/s | peak memory growth | bytes a token at the peak | table bytes a token |")
    print("|---|---:|---:|---:|---:|---:|")
    names = {"baseline": "per-window lists → `Dataset.from_dict` (before)", "to_dataset": "`PackedStream.to_dataset`",
             "to_dataset_no_labels": "`to_dataset(labels=False)` (`hf-capacity train`)"}
    for side, (seconds, grown, table) in med.items():
        print(f"| {names[side]} | {seconds:.2f} | {tokens / seconds / 1e6:.2f} | {grown / 1e9:.2f} GB | "
              f"{grown / tokens:.0f} | {table / tokens:.1f} |")
    (tb, gb, _), (tn, gn, _), (tl, gl, _) = med.values()
    scale = 1000 / args.exposures / 1e9  # GB at 1000 exposures
    print(f"\nto_dataset vs baseline: **{tb / tn:.1f}x faster**, **{gb / gn:.1f}x less peak memory**; without labels "
          f"{tb / tl:.1f}x faster, {gb / gl:.1f}x less peak memory; at 1000 exposures of N {args.N:,} "
          f"({tokens * 1000 / args.exposures / 1e6:.0f}M tokens) the build would grow by ~{gb * scale:.0f} GB "
          f"before, ~{gn * scale:.1f} GB with labels, ~{gl * scale:.1f} GB without")

if __name__ == "__main__":
    main()
