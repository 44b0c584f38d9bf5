"""One torchrun rank of a Slurm test: joins the process group, sums the ranks across it, and
records what the rank sees, so the test can check that every rank ran inside one
allocation, on which node, with the job's devices, and that the ranks really talked.
With FAIL_ON_NODE=i, local rank 0 of the job's node i exits 3 before joining."""

import json
import os
import sys

import torch
import torch.distributed as dist

out = sys.argv[1]
if os.environ.get("SLURM_NODEID") == os.environ.get("FAIL_ON_NODE") and os.environ["LOCAL_RANK"] == "0":
    print(f"rank {os.environ['RANK']} gives up on node {os.environ['SLURMD_NODENAME']}", file=sys.stderr)
    sys.exit(3)
dist.init_process_group("gloo")
total = torch.tensor([dist.get_rank()])
dist.all_reduce(total)
seen = {
    key: os.environ.get(key)
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "CUDA_VISIBLE_DEVICES", "SLURM_JOB_ID", "SLURMD_NODENAME")
}
seen["rank_sum"] = int(total)
dist.destroy_process_group()
with open(os.path.join(out, f"rank{seen['RANK']}.json"), "w") as record:
    json.dump(seen, record)
