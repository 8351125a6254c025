"""Attack throughput: reconstructions per hour of the batched engine against a plain sequential loop.

The sequential loop attacks one image at a time on the victim as it is, with plain autograd (`create_graph=True`) and
torch's threads, the way Inverting Gradients and breaching run. The engine attacks K = 1, 8 and 32 images together
on a prepared copy of the victim (`prepare_victim`), the way `attack_batch` splits them on this machine: one vmap
chunk per worker thread (K = 32 on 2 workers: two chunks of 16 at the same time, one thread each; K = 1: the
sequential path on all threads); `auto` runs `attack_batch` on 32 images with the chunk size its calibration picks
(calibration time included). Everything runs in one process, same data, same iterations, interleaved per model,
best of `--rounds` rounds (`--resnet-rounds`, default 1, for the 32x32 victims). The loop and the K columns time the
optimisation only: each attack's one-time setup, computing its observed gradients (about one evaluation's cost, which
an 8,000-iteration attack never notices but a 2-iteration timing does), is done before the clock starts, for both
(`--with-setup` times it too; `auto` always includes it, and its calibration). An attack of N iterations evaluates
the objective N + 1 times (the last gives its final distance): times are per evaluation (seconds / (N + 1)), and
reconstructions per hour are at 1000 iterations. Ratios are against the sequential loop on the same device. `--ks`
sets the K columns (default 1, 8, 32 on a CPU; 1, 8, 32, 128, 512 on a GPU, where one worker runs one chunk of K).
Each K > 1 is timed in both batched formulations of `_Objective`: `vmap` (the column `K=k`) and `shared` (the victim
batched on its shared weights, per-candidate parameter gradients; `K=k shared`, split over the workers as above, and
`K=k shared, 1 worker`: one chunk of k on all threads); `auto` says which chunk and formulation calibration chose.

Distance to the machine's limit: the floating-point operations of one attack iteration on one image are counted once
per victim with `torch.utils.flop_counter` (forward, the gradient and the second-order backward, as torch dispatches
them; one iteration = the count of a 2-iteration attack minus a 1-iteration one) for the sequential loop, and
achieved GFLOP/s = that count / seconds per image-iteration for every column: the same objective is computed, so
this is the useful work per second. The count torch dispatches for the engine's vmapped formulation is shown beside
it; it is not used for GFLOP/s, as the flop counter sizes batched (grouped) convolutions as if ungrouped. The peak
used for "% of peak" is the best rate measured in the run: a large float32 matmul, 3x3 convolutions forward and
backward (64 channels at 32x32, 256 at 16x16), each timed a few times on the same threads, and every rate of the
tables (the ideal batched calls of `--bound` exceed the microbenchmarks on this CPU).

`--bound` also runs `benchmarks/attack_bound.py`'s measurement per victim in the same process: the attack step's
arithmetic as one ordinary batched call of K = 32 images, the attainable speed-up with ideal batching. The paper
scale (600 originals x 14 victims x 8,000 iterations) is estimated from each victim's measured rates.

    .venv/bin/python benchmarks/attack_throughput.py [--iterations 20] [--threads N] [--device cpu] [--ks 1,8,32]
                                                     [--bound] [--clock wall|cpu] [--out FILE]

`--clock cpu` times everything by the process's CPU time: with `--threads 1` (one worker) that is what the attack
costs on one core, whatever else runs on the machine; with more threads it also counts threads that wait spinning.
"""
import argparse, math, os, platform, time
import torch
from torch.utils.flop_counter import FlopCounterMode
from semsim.attacks import (attack_batch, get_attack, target_gradients, target_norms, prepare_victim, default_workers,
                            _Objective, _adam_chunk, _optimise, _slices, _torch_threads, _CALIBRATION)
from semsim.core import generator
from semsim.data import load_dataset
from semsim.victims import build_model

N_IMAGES = 32

def setups(device, n: int = N_IMAGES):
    "(name, model, images, labels) for each benchmarked victim (n images each); untrained, seeded."
    fm = load_dataset('fashion_mnist', 'test')
    x28, y28 = fm.floats(range(n)), fm.labels[:n]
    g = generator(0)
    x32, y32 = torch.rand(n, 3, 32, 32, generator=g), torch.randint(0, 10, (n,), generator=g)
    cifar = type(fm.info)('cifar-shaped', [str(i) for i in range(10)], (32, 32), 3, (0.5,) * 3, (0.25,) * 3)
    for name, arch, info, width, x, y in [('lenet 28×28', 'lenet', fm.info, None, x28, y28),
                                          ('convnet16 28×28', 'convnet', fm.info, 16, x28, y28),
                                          ('convnet64 3×32×32', 'convnet', cifar, 64, x32, y32),
                                          ('resnet20_4 3×32×32', 'resnet20_4', cifar, None, x32, y32)]:
        torch.manual_seed(0)
        yield name, build_model(arch, info, width).eval().to(device), x.to(device), y.to(device)

def problem(model, x, y, spec):
    "What an attack starts from: random images, one-hot labels, observed gradients and their norms."
    t = target_gradients(model, x, y)
    yy = torch.nn.functional.one_hot(y, t[-1].shape[-1]).to(x.dtype)
    x0 = torch.stack([torch.randn(x.shape[1:], generator=generator(i)) for i in range(len(x))]).to(x.device)
    return x0, yy, t, target_norms(t)

CLOCK = [time.perf_counter]   # `--clock cpu`: time.process_time (this process's CPU time, all its threads)

def timed(f):
    "Seconds that f takes (synchronising the GPU)."
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    sync(); t0 = CLOCK[0](); f(); sync()
    return CLOCK[0]() - t0

SETUP = [False]   # `--with-setup`: time each attack's one-time setup (its observed gradients) with it

def sequential_loop(model, x, y, iterations):
    "The plain loop: one image at a time, the victim as it is, plain autograd; returns seconds."
    spec = get_attack('ig', iterations)
    pre = None if SETUP[0] else [problem(model, x[i:i+1], y[i:i+1], spec) for i in range(len(x))]
    def run():
        for i in range(len(x)):
            x0, yy, t, tn = pre[i] if pre else problem(model, x[i:i+1], y[i:i+1], spec)
            _adam_chunk(_Objective(model, spec), x0, yy, t, tn, iterations, batched=False)
    return timed(run)

def engine(model, x, y, iterations, k, workers, formulation='vmap'):
    ("The engine on the images x, k at a time, each k split into one chunk per worker as `attack_batch` does "
     "(chunks run in `formulation`); returns seconds.")
    spec = get_attack('ig', iterations)
    workers = min(workers, k)
    pre = None if SETUP[0] else problem(model, x, y, spec)
    def run():
        with _torch_threads(torch.get_num_threads() // workers):
            x0, yy, t, tn = pre or problem(model, x, y, spec)
            objectives = [_Objective(prepare_victim(model), spec, formulation) for _ in range(workers)]
            chunk = math.ceil(k / workers)
            _optimise(objectives, x0, yy, t, tn, iterations, _slices(len(x), chunk), chunk > 1)
    return timed(run)

def step_flops(model, x, y) -> int:
    "FLOPs of one sequential attack iteration on one image (objective, its image gradient, the Adam step)."
    spec = get_attack('ig', 1)
    x0, yy, t, tn = problem(model, x[:1], y[:1], spec)
    def count(n):   # an attack of n iterations evaluates the objective n + 1 times (the last: its final distance)
        with FlopCounterMode(display=False) as fc: _adam_chunk(_Objective(model, spec), x0, yy, t, tn, n, batched=False)
        return fc.get_total_flops()
    return count(2) - count(1)

def engine_flops(model, x, y, k: int) -> float:
    "FLOPs per image of one engine iteration on k images in one chunk (the prepared victim, vmapped when k > 1)."
    spec = get_attack('ig', 1)
    x0, yy, t, tn = problem(model, x[:k], y[:k], spec)
    def count(n):
        with FlopCounterMode(display=False) as fc:
            _optimise([_Objective(prepare_victim(model), spec)], x0, yy, t, tn, n, _slices(k, k), k > 1)
        return fc.get_total_flops()
    return (count(2) - count(1)) / k

def peak_gflops(device) -> dict:
    ("Measured float32 rates on this device and thread count: a large matmul, 3x3 convolutions forward and backward "
     "(GFLOP/s).")
    g = generator(0)
    n = 2048 if device.type == 'cpu' else 8192
    a, b = torch.randn(n, n, generator=g).to(device), torch.randn(n, n, generator=g).to(device)
    out = {f'matmul {n}²': (lambda: a @ b, 2 * n ** 3)}
    for N, C, H in ((64, 64, 32), (32, 256, 16)):
        xi = torch.randn(N, C, H, H, generator=g).to(device).requires_grad_()
        w = torch.randn(C, C, 3, 3, generator=g).to(device).requires_grad_()
        o = torch.nn.functional.conv2d(xi, w, padding=1); go = torch.randn_like(o)
        fl = 2 * N * C * C * 9 * H * H
        out[f'conv {N}×{C}×{H}², 3×3'] = (lambda xi=xi, w=w: torch.nn.functional.conv2d(xi, w, padding=1), fl)
        out[f'conv {N}×{C}×{H}², 3×3 backward'] = (
            lambda o=o, xi=xi, w=w, go=go: torch.autograd.grad(o, [xi, w], go, retain_graph=True), 2 * fl)
    for k, (f, flops) in out.items():
        f()
        out[k] = flops / min(timed(f) for _ in range(5)) / 1e9
    return out

def auto(model, x, y, iterations):
    "`attack_batch` with the calibrated chunk size and default workers, calibration included; returns (seconds, chunk)."
    _CALIBRATION.clear()
    out = {}
    dt = timed(lambda: out.update(r=attack_batch(model, x, y, 'ig', iterations, batch=None, verbose=False)))
    return dt, f"{out['r'].chunk} {out['r'].formulation}"

PAPER = (600, 14, 8000)   # originals, victims, iterations of the paper's attacks

def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--iterations', type=int, default=20, help='iterations per attack (lenet, convnet16)')
    p.add_argument('--resnet-iterations', type=int, default=3,
                   help='iterations per attack for the 32x32 victims (convnet64, resnet20_4)')
    p.add_argument('--rounds', type=int, default=2, help='interleaved rounds for the 28x28 victims (best is kept)')
    p.add_argument('--resnet-rounds', type=int, default=1, help='interleaved rounds for the 32x32 victims')
    p.add_argument('--threads', type=int, default=torch.get_num_threads(),
                   help='torch CPU threads (default: all cores)')
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--ks', default=None,
                   help='comma-separated K to time (default 1,8,32 on a CPU, 1,8,32,128,512 on a GPU)')
    p.add_argument('--only', default=None, help='comma-separated victims to run: lenet,convnet16,convnet64,resnet20_4')
    p.add_argument('--bound', action='store_true',
                   help='also measure the ideal-batching bound (benchmarks/attack_bound.py) per victim')
    p.add_argument('--bound-rounds', type=int, default=3, help='interleaved rounds of the bound')
    p.add_argument('--clock', default='wall', choices=('wall', 'cpu'),
                   help="'cpu': time by this process's CPU time (robust to other jobs on the cores with --threads 1)")
    p.add_argument('--with-setup', action='store_true',
                   help="time each attack's one-time setup (computing its observed gradients) as part of it")
    p.add_argument('--out', default=None, help='also write the markdown tables to this file')
    a = p.parse_args()
    SETUP[0] = a.with_setup
    if a.clock == 'cpu': CLOCK[0] = time.process_time
    torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    ks = [int(k) for k in (a.ks or ('1,8,32' if dev.type == 'cpu' else '1,8,32,128,512')).split(',')]
    n_auto = max(N_IMAGES, max(ks))
    W = default_workers(dev)
    machine = (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
               f"{a.threads} thread(s), {W} worker(s)" if dev.type == 'cpu' else torch.cuda.get_device_name(dev))
    load0 = ' '.join(f'{v:.1f}' for v in os.getloadavg())
    peak = peak_gflops(dev)
    print('measured rates: ' + ', '.join(f"{k} {v:.1f} GFLOP/s" for k, v in peak.items()), flush=True)
    if a.bound: import attack_bound
    t_start, rows, bounds, observed = time.perf_counter(), [], [], list(peak.values())
    for name, model, x, y in setups(dev, n_auto):
        if a.only and name.split()[0] not in a.only.split(','): continue
        t_victim = time.perf_counter()
        big = '32×32' in name
        it = a.resnet_iterations if big else a.iterations
        flops = step_flops(model, x, y)
        eflops = engine_flops(model, x, y, 8)
        engine(model, x[:2], y[:2], 1, 2, 1); sequential_loop(model, x[:1], y[:1], 1)   # warm-up
        n_seq = 8
        sizes = {k: max(n_seq, k) for k in ks}   # images timed per column
        per = {}  # seconds per image-iteration, the best of `rounds` interleaved rounds (the machine may be shared)
        # an attack of `it` iterations evaluates the objective it + 1 times
        for _ in range(a.resnet_rounds if big else a.rounds):
            per['seq'] = min(per.get('seq', math.inf),
                             sequential_loop(model, x[:n_seq], y[:n_seq], it) / n_seq / (it + 1))
            for k, n in sizes.items():
                per[k] = min(per.get(k, math.inf), engine(model, x[:n], y[:n], it, k, W) / n / (it + 1))
                for label, w in ((f'{k} shared', W), (f'{k} shared, 1 worker', 1)):
                    if k > 1 and (w != W or label.endswith('shared')):
                        per[label] = min(per.get(label, math.inf),
                                         engine(model, x[:n], y[:n], it, k, w, 'shared') / n / (it + 1))
        t_auto, chunk = auto(model, x[:n_auto], y[:n_auto], it); per['auto'] = t_auto / n_auto / (it + 1)
        gf = {k: flops / v / 1e9 for k, v in per.items()}   # useful work: the loop's count per image-iteration
        observed += list(gf.values())
        rows.append(dict(name=name, it=it, flops=flops, eflops=eflops, per=per, gf=gf, chunk=chunk))
        print(name, f"{time.perf_counter() - t_victim:.0f} s:", {k: f"{v * 1e3:.1f} ms" for k, v in per.items()},
              flush=True)
        if a.bound:
            b = attack_bound.bound(name, model, x, y, a.bound_rounds, a.threads, dev.type == 'cpu')
            observed += [b['flops']['loop'] / v[0] / 1e9 for k, v in b['best'].items() if '1 thread' not in k]
            bounds.append((name, b))
            print(name, 'bound', {k: f"{v[0] * 1e3:.1f} ms" for k, v in b['best'].items()}, flush=True)
    best_peak = max(observed)
    cols = [k for k in rows[0]['per'] if k not in ('seq', 'auto')] if rows else ks
    total = time.perf_counter() - t_start
    lines = [f"device: {a.device} ({machine}); clock: {a.clock}; "
             f"load average (1, 5, 15 min) at start: {load0}, at end: "
             f"{' '.join(f'{v:.1f}' for v in os.getloadavg())}; total benchmark time {total:.0f} s",
             "measured rates: " + ', '.join(f"{k} {v:.1f} GFLOP/s" for k, v in peak.items())
             + f"; peak used for %: {best_peak:.1f} GFLOP/s (the best of these and of every rate measured below)", '',
             '| victim | iterations | MFLOP per image-iteration (loop / engine as dispatched) | sequential loop rec/h '
             '| sequential GFLOP/s (% of peak) | ' + ' | '.join(f'K={k}' for k in cols)
             + ' | auto (chunk) | best engine useful GFLOP/s (% of peak) |', '|---' * (7 + len(cols)) + '|']
    pct = lambda g: f"{g:.1f} ({100 * g / best_peak:.0f} %)"
    estimates = []
    for r in rows:
        per, gf = r['per'], r['gf']
        rate = {k: 3600 / (v * 1000) for k, v in per.items()}   # reconstructions per hour at 1000 iterations
        best = max((k for k in per if k != 'seq'), key=lambda k: gf[k])
        lines.append(f"| {r['name']} | {r['it']} | {r['flops'] / 1e6:.0f} / {r['eflops'] / 1e6:.0f} | "
                     f"{rate['seq']:.3g} | {pct(gf['seq'])} | "
                     + ' | '.join(f"{per['seq'] / per[k]:.2f}×" for k in cols)
                     + f" | {per['seq'] / per['auto']:.2f}× ({r['chunk']}) | "
                     f"{pct(gf[best])} at {best if best == 'auto' else f'K={best}'} |")
        hours = lambda k: PAPER[0] * PAPER[1] * PAPER[2] * per[k] / 3600
        estimates.append(f"- {r['name']}: {hours('seq'):,.0f} h sequential, {hours(best):,.0f} h with the engine at "
                         f"{best if best == 'auto' else f'K={best}'} ({hours(best) / 24:,.1f} days)")
    lines += ['', f"Paper scale ({PAPER[0]} originals × {PAPER[1]} victims × {PAPER[2]:,} iterations, as if all "
              f"{PAPER[1]} victims were this one), on this device at the rates above:"] + estimates
    if bounds:
        lines += ['', 'Ideal batching (benchmarks/attack_bound.py: the same arithmetic as one ordinary batched call, '
                  f'best of {a.bound_rounds} interleaved rounds; ms per image-iteration, wall / CPU time):', '']
        lines += attack_bound.BOUND_HEADER + [attack_bound.bound_row(n, b, best_peak) for n, b in bounds]
    print('\n'.join(lines))
    if a.out: open(a.out, 'w').write('\n'.join(lines) + '\n')

if __name__ == '__main__':
    main()
