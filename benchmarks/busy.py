"""A CPU-bound neighbour: runs matrix products on torch's default threads until killed.

Used to measure l2l the way it is often run, on a machine shared with another job:

    python benchmarks/busy.py &  BUSY=$!
    time python train.py run_name=demo_loaded
    kill $BUSY
"""

import torch

a = torch.randn(1500, 1500)
while True:
    a = torch.tanh(a @ a / 1500)
