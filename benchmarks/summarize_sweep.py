"""Print the sweep rows of a bench_kernels.py results.json, best first per shape.

    python benchmarks/summarize_sweep.py results.json
"""

import json
import sys
from collections import defaultdict

rows = json.load(open(sys.argv[1]))["sweep"]
by_shape = defaultdict(list)
for row in rows:
    by_shape[(row["kind"], row["shape"])].append(row)
for (kind, shape), group in by_shape.items():
    print(f"== {kind} {shape}")
    for row in sorted(group, key=lambda r: -r.get("metric", 0))[:8]:
        c = row["config"]
        cfg = f"m{c['block_m']} n{c['block_n']} w{c['num_warps']} s{c['num_stages']} x{row['num_splits']}"
        us = row.get("ms", 0) * 1e3
        print(f"  {cfg}: {row.get('metric', 0):.2f} ({us:.1f} us) {row.get('error', '')}")
