"""One shape of decode attention, called a few times (for `ncu`): python ncu_decode_probe.py 16x4096"""
import sys

import torch
from bench_kernels import PagedBatch

batch, seq_len = map(int, sys.argv[1].split("x"))
data = PagedBatch(batch, seq_len, 1)
for _ in range(8):
    data.ours()
torch.cuda.synchronize()
