"""PyTorch reference for `npm run bench:train`: the report's CNN decoder (paper size), the same step
(forward, MSE, backward, AdamW 3e-4 / wd 3e-2). Driven over stdin: "train B K W" -> step times of K steps
after W warm-up steps (default 1); "infer K" -> median batch-1 eval forward ms; "rss" -> peak RSS in MB; "quit".
The benchmark starts one process per measurement so that only one side holds its ~5-15 GB at a time."""
import json
import os
import resource
import sys
import time

import torch
from torch import nn

torch.set_num_threads(int(os.environ.get("BENCH_THREADS", os.cpu_count() or 1)))
NEURONS = int(sys.argv[1]) if len(sys.argv) > 1 else 8587


def decoder(n):
    layers = [nn.Linear(n, 64 * 18 * 32), nn.BatchNorm1d(64 * 18 * 32), nn.LeakyReLU(0.01), nn.Dropout(0.15), nn.Unflatten(1, (64, 18, 32))]
    spec = [(64, 480, 7, 2, 2), (480, 256, 5, 1, 2), (256, 256, 5, 1, 2), (256, 128, 4, 1, 1), (128, 64, 3, 1, 1)]
    for cin, cout, k, s, p in spec:
        layers += [nn.ConvTranspose2d(cin, cout, k, s, p), nn.BatchNorm2d(cout), nn.ReLU(), nn.Dropout(0.35)]
    layers += [nn.ConvTranspose2d(64, 1, 3, 1, 0)]
    return nn.Sequential(*layers)


model = decoder(NEURONS)
opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=3e-2)


def step(x, y):
    opt.zero_grad(set_to_none=True)
    out = model(x)[:, :, 2:38, 2:66]
    loss = nn.functional.mse_loss(out, y)
    loss.backward()
    opt.step()
    return float(loss)


def median(v):
    v = sorted(v)
    return v[len(v) // 2]


for line in sys.stdin:
    cmd = line.split()
    if not cmd:
        continue
    if cmd[0] == "quit":
        break
    if cmd[0] == "train":
        b, k = int(cmd[1]), int(cmd[2])
        warmup = int(cmd[3]) if len(cmd) > 3 else 1
        model.train()
        x = torch.randn(b, NEURONS)
        y = torch.randn(b, 1, 36, 64)
        for _ in range(warmup):
            step(x, y)
        times = []
        for _ in range(k):
            t0 = time.perf_counter()
            step(x, y)
            times.append((time.perf_counter() - t0) * 1000)
        print(json.dumps({"ms": median(times), "all": times}), flush=True)
    elif cmd[0] == "infer":
        k = int(cmd[1])
        model.eval()
        x = torch.randn(1, NEURONS)
        times = []
        with torch.no_grad():
            for _ in range(k):
                t0 = time.perf_counter()
                model(x)
                times.append((time.perf_counter() - t0) * 1000)
        print(json.dumps({"ms": median(times)}), flush=True)
    elif cmd[0] == "rss":
        print(json.dumps({"mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}), flush=True)
