"""One torchrun rank of a Slurm test: records what the rank sees, so the test can check that
every rank ran inside one allocation with the job's devices."""

import json
import os
import sys

out = sys.argv[1]
seen = {key: os.environ.get(key) for key in ("RANK", "WORLD_SIZE", "CUDA_VISIBLE_DEVICES", "SLURM_JOB_ID")}
with open(os.path.join(out, f"rank{seen['RANK']}.json"), "w") as record:
    json.dump(seen, record)
