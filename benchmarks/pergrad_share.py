"""How much of an attack step needs each image's own weights, and what that part alone allows (Amdahl).

    .venv/bin/python benchmarks/pergrad_share.py [--victim resnet20_4] [--k 8] [--rounds 5]

The attack objective compares each image's parameter gradient with that image's own target. For a convolution
y = W * a of an image, one attack step does seven convolutions' worth of arithmetic (F = the forward's FLOPs):
- forward y = conv(a, W)                                                      shared W
- first backward: the input gradient conv_T(dy, W)                            shared W
  and the weight gradient g = corr(a, dy)                                     one per image
- double backward, through g with v = d(objective)/dg:  conv_T(dy, v), conv(a, v)   the image's own v
  through the input gradient and the forward: conv(u, W), conv_T(., W)        shared W
So 3F of 7F are convolutions with per-image weights (or per-image weight outputs): batching K images cannot share a
weight there; they are K batch-1 problems, whichever way they are dispatched (a grouped convolution with K groups,
or K calls). The other 4F share W and can run as one batch-K convolution.

The script measures, for each convolution of the victim at its real input shape and on the same threads:
- batch-1 forward + backward (what the sequential loop does),
- batch-K forward + backward with one shared W (what ideal batching does),
- the per-image-weight form: a grouped convolution of K groups, forward + backward (what the engine must do),
and combines them, weighted by each layer's FLOPs, into three times per image for the 7F of a step: the loop's (all at
batch 1), the ideal's (all batched: the bound of attack_bound.py), and the per-image-weight bound (4F batched, 3F at
the best per-image-weight rate: batch-1 or grouped). The last one is what any exact batched formulation can reach
with these kernels.
"""
import argparse, os, platform, time
import torch
import torch.nn.functional as F
import sys
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent))
from attack_throughput import setups


def conv_shapes(model, x):
    "(module, input shape of one image) of every Conv2d, in forward order."
    out = []
    hooks = [m.register_forward_pre_hook(lambda m, i: out.append((m, tuple(i[0].shape[1:]))))
             for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad(): model(x[:1])
    for h in hooks: h.remove()
    return out


CLOCK = [time.perf_counter]   # `--clock cpu`: time.process_time (this process's CPU time)

def fwd_bwd(a, w, stride, padding, groups=1):
    "Seconds of one forward + backward (input and weight gradients) of conv2d."
    a = a.detach().requires_grad_(); w = w.detach().requires_grad_()
    t0 = CLOCK[0]()
    y = F.conv2d(a, w, None, stride, padding, 1, groups)
    torch.autograd.grad(y, [a, w], torch.ones_like(y))
    return CLOCK[0]() - t0


def layer_times(m, shape, k, rounds, g):
    "Best seconds per image of the three forms for one layer: batch 1, batch k shared, k groups (per-image weights)."
    c, h, w_ = shape
    w = m.weight.detach()
    a1, ak = torch.randn(1, c, h, w_, generator=g), torch.randn(k, c, h, w_, generator=g)
    agrp, wgrp = ak.reshape(1, k * c, h, w_), w.repeat(k, 1, 1, 1)
    forms = {'batch 1': lambda: fwd_bwd(a1, w, m.stride, m.padding),
             f'batch {k} shared': lambda: fwd_bwd(ak, w, m.stride, m.padding) / k,
             f'{k} groups': lambda: fwd_bwd(agrp, wgrp, m.stride, m.padding, groups=k) / k}
    for f in forms.values(): f()   # warm-up
    best = {n: float('inf') for n in forms}
    for _ in range(rounds):         # interleaved rounds, best kept
        for n, f in forms.items(): best[n] = min(best[n], f())
    flops = 2 * w.numel() * (h // m.stride[0]) * (w_ // m.stride[1])   # forward FLOPs (same padding)
    return best, flops


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--victim', default='resnet20_4', help='lenet, convnet16, convnet64 or resnet20_4')
    p.add_argument('--k', type=int, default=8, help='images batched together')
    p.add_argument('--rounds', type=int, default=5, help='interleaved rounds (best kept)')
    p.add_argument('--threads', type=int, default=None, help='torch threads (default: all cores)')
    p.add_argument('--clock', choices=('wall', 'cpu'), default='wall',
                   help="'cpu': time by this process's CPU time (robust to other jobs with --threads 1)")
    a = p.parse_args()
    if a.threads: torch.set_num_threads(a.threads)
    if a.clock == 'cpu': CLOCK[0] = time.process_time
    name, model, x, y = next(s for s in setups(torch.device('cpu')) if s[0].startswith(a.victim + ' '))
    g = torch.Generator().manual_seed(0)
    load = lambda: ' '.join(open('/proc/loadavg').read().split()[:3])
    print(f"{name}, K = {a.k}, {torch.get_num_threads()} threads, clock {a.clock}, torch {torch.__version__}, "
          f"{platform.machine()}; load average at start {load()}")
    tot = {'batch 1': 0.0, f'batch {a.k} shared': 0.0, f'{a.k} groups': 0.0}
    total_flops = 0
    rows = []
    for m, shape in conv_shapes(model, x):
        best, fl = layer_times(m, shape, a.k, a.rounds, g)
        for n in tot: tot[n] += best[n]
        total_flops += fl
        rows.append((f"{tuple(m.weight.shape)} s{m.stride[0]} on {shape}", fl, best))
    print('| convolution (weight, stride, input) | MFLOP forward | ' + ' | '.join(f'{n}, GFLOP/s' for n in tot) + ' |')
    print('|---|---|' + '---|' * len(tot))
    for label, fl, best in rows:
        print(f"| {label} | {fl / 1e6:.1f} | " + ' | '.join(f'{3 * fl / best[n] / 1e9:.1f}' for n in tot) + ' |')
    rate = {n: 3 * total_flops / t / 1e9 for n, t in tot.items()}   # forward + backward = 3F
    b1, bk, grp = (tot[n] / 3 for n in tot)          # seconds per image per F, summed over the layers
    loop, ideal = 7 * b1, 7 * bk
    per_image = 4 * bk + 3 * min(b1, grp)
    print(f"all convolutions, forward + backward: " + ', '.join(f'{n} {r:.1f} GFLOP/s' for n, r in rate.items()))
    print(f"one attack step's 7F per image: loop {1e3 * loop:.1f} ms (all batch 1), ideal {1e3 * ideal:.1f} ms "
          f"(all batched: {loop / ideal:.2f}x), per-image-weight bound {1e3 * per_image:.1f} ms "
          f"(4F batched + 3F at the best per-image-weight rate: {loop / per_image:.2f}x)")
    print(f"load average at end {load()}")


if __name__ == '__main__':
    main()
