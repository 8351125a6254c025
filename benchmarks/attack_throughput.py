"""Attack throughput: reconstructions per hour of the batched engine against a plain sequential loop.

The sequential loop attacks one image at a time on the victim as it is, with plain autograd (`create_graph=True`) and
torch's threads, the way Inverting Gradients and breaching run. The engine attacks K = 1, 8 and 32 images together
on a prepared copy of the victim (`prepare_victim`), the way `attack_batch` splits them on this machine: one vmap
chunk per worker thread (K = 32 on 2 workers: two chunks of 16 at the same time, one thread each; K = 1: the
sequential path on all threads); `auto` runs `attack_batch` on 32 images with the chunk size its calibration picks
(calibration time included). Everything runs in one process, same data, same iterations, interleaved per model,
best of `--rounds` rounds (1 for the 32x32 victims). Reconstructions per hour are reported at 1000 iterations,
extrapolated linearly from the measured iterations; ratios are against the sequential loop.

Distance to the machine's limit: the floating-point operations of one attack iteration on one image are counted once
per victim with `torch.utils.flop_counter` (forward, the gradient and the second-order backward, as torch dispatches
them) for the sequential loop, and achieved GFLOP/s = that count x iterations x images / seconds for every column:
the same objective is computed, so this is the useful work per second. The count torch dispatches for the engine's
vmapped formulation is shown beside it; it is not used for GFLOP/s, as the flop counter sizes batched (grouped)
convolutions as if ungrouped, which gives rates above the measured peak. The peak is measured on the same threads: the
best of a large float32 matmul and a large 3x3 convolution (forward), each timed a few times.

    .venv/bin/python benchmarks/attack_throughput.py [--iterations 20] [--threads N] [--device cpu] [--out FILE]
"""
import argparse, math, os, platform, time
import torch
from torch.utils.flop_counter import FlopCounterMode
from semsim.attacks import (attack_batch, get_attack, target_gradients, target_norms, prepare_victim, default_workers, _Objective,
                            _adam_chunk, _optimise, _slices, _torch_threads, _CALIBRATION)
from semsim.core import generator
from semsim.data import load_dataset
from semsim.victims import build_model

N_IMAGES = 32

def setups(device):
    "(name, model, images, labels) for each benchmarked victim; untrained, seeded."
    fm = load_dataset('fashion_mnist', 'test')
    x28, y28 = fm.floats(range(N_IMAGES)), fm.labels[:N_IMAGES]
    g = generator(0)
    x32, y32 = torch.rand(N_IMAGES, 3, 32, 32, generator=g), torch.randint(0, 10, (N_IMAGES,), generator=g)
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

def timed(f):
    "Seconds that f takes (synchronising the GPU)."
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    sync(); t0 = time.perf_counter(); f(); sync()
    return time.perf_counter() - t0

def sequential_loop(model, x, y, iterations):
    "The plain loop: one image at a time, the victim as it is, plain autograd; returns seconds."
    spec = get_attack('ig', iterations)
    def run():
        for i in range(len(x)):
            x0, yy, t, tn = problem(model, x[i:i+1], y[i:i+1], spec)
            _adam_chunk(_Objective(model, spec), x0, yy, t, tn, iterations, batched=False)
    return timed(run)

def engine(model, x, y, iterations, k, workers):
    "The engine on the images x, k at a time, each k split into one chunk per worker as `attack_batch` does; returns seconds."
    spec = get_attack('ig', iterations)
    workers = min(workers, k)
    def run():
        with _torch_threads(torch.get_num_threads() // workers):
            x0, yy, t, tn = problem(model, x, y, spec)
            objectives = [_Objective(prepare_victim(model), spec) for _ in range(workers)]
            chunk = math.ceil(k / workers)
            _optimise(objectives, x0, yy, t, tn, iterations, _slices(len(x), chunk), chunk > 1)
    return timed(run)

def step_flops(model, x, y) -> int:
    "FLOPs of one sequential attack iteration on one image (objective, its image gradient, the Adam step)."
    spec = get_attack('ig', 1)
    x0, yy, t, tn = problem(model, x[:1], y[:1], spec)
    with FlopCounterMode(display=False) as fc:
        _adam_chunk(_Objective(model, spec), x0, yy, t, tn, 1, batched=False)
    return fc.get_total_flops()

def engine_flops(model, x, y, k: int) -> float:
    "FLOPs per image of one engine iteration on k images in one chunk (the prepared victim, vmapped when k > 1)."
    spec = get_attack('ig', 1)
    x0, yy, t, tn = problem(model, x[:k], y[:k], spec)
    with FlopCounterMode(display=False) as fc:
        _optimise([_Objective(prepare_victim(model), spec)], x0, yy, t, tn, 1, _slices(k, k), k > 1)
    return fc.get_total_flops() / k

def peak_gflops(device) -> dict:
    "Measured float32 peak on this device and thread count: a large matmul and a large 3x3 convolution (GFLOP/s)."
    g = generator(0)
    a, b = torch.randn(2048, 2048, generator=g).to(device), torch.randn(2048, 2048, generator=g).to(device)
    xi, w = torch.randn(64, 64, 32, 32, generator=g).to(device), torch.randn(64, 64, 3, 3, generator=g).to(device)
    conv = lambda: torch.nn.functional.conv2d(xi, w, padding=1)
    out = {}
    for what, f, flops in (('matmul 2048²', lambda: a @ b, 2 * 2048 ** 3), ('conv 64×64×32×32, 3×3', conv, 2 * 64 * 64 * 64 * 9 * 32 * 32)):
        f()
        out[what] = flops / min(timed(f) for _ in range(5)) / 1e9
    return out

def auto(model, x, y, iterations):
    "`attack_batch` with the calibrated chunk size and default workers, calibration included; returns (seconds, chunk)."
    _CALIBRATION.clear()
    out = {}
    dt = timed(lambda: out.update(r=attack_batch(model, x, y, 'ig', iterations, batch=None, verbose=False)))
    return dt, out['r'].chunk

def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--iterations', type=int, default=20, help='iterations per attack (lenet, convnet)')
    p.add_argument('--resnet-iterations', type=int, default=3, help='iterations per attack for the 32x32 victims (convnet64, resnet20_4)')
    p.add_argument('--rounds', type=int, default=2, help='interleaved rounds for the 28x28 victims (best is kept)')
    p.add_argument('--threads', type=int, default=torch.get_num_threads(), help='torch CPU threads (default: all cores)')
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--only', default=None, help='comma-separated victims to run: lenet,convnet16,convnet64,resnet20_4')
    p.add_argument('--out', default=None, help='also write the markdown table to this file')
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    W = default_workers(dev)
    machine = (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
               f"{a.threads} thread(s), {W} worker(s)" if dev.type == 'cpu' else torch.cuda.get_device_name(dev))
    peak = peak_gflops(dev); best_peak = max(peak.values())
    lines = [f"device: {a.device} ({machine}); load average at start: {os.getloadavg()[0]:.1f}",
             "measured peak: " + ', '.join(f"{k} {v:.1f} GFLOP/s" for k, v in peak.items()), '',
             '| victim | iterations | MFLOP per image-iteration (loop / engine as dispatched) | sequential loop rec/h | sequential GFLOP/s (% of peak) '
             '| K=1 | K=8 | K=32 | auto (chunk) | best engine useful GFLOP/s (% of peak) |',
             '|---|---|---|---|---|---|---|---|---|---|']
    print('\n'.join(lines), flush=True)
    t_start = time.perf_counter()
    for name, model, x, y in setups(dev):
        if a.only and name.split()[0] not in a.only.split(','): continue
        big = '32×32' in name
        it = a.resnet_iterations if big else a.iterations
        flops = step_flops(model, x, y)
        eflops = {1: engine_flops(model, x, y, 1), 8: engine_flops(model, x, y, 8)}
        eflops.update({32: eflops[8], 'auto': eflops[8], 'seq': flops})
        engine(model, x[:2], y[:2], 1, 2, 1); sequential_loop(model, x[:1], y[:1], 1)   # warm-up
        n_seq = 8
        sizes = {k: max(n_seq, k) for k in (1, 8, 32)}   # images timed per column
        per = {}  # seconds per image, the best of `rounds` interleaved rounds (the machine may be shared)
        for _ in range(1 if big else a.rounds):
            per['seq'] = min(per.get('seq', math.inf), sequential_loop(model, x[:n_seq], y[:n_seq], it) / n_seq)
            for k, n in sizes.items():
                per[k] = min(per.get(k, math.inf), engine(model, x[:n], y[:n], it, k, W) / n)
        t_auto, chunk = auto(model, x, y, it); per['auto'] = t_auto / len(x)
        rate = {k: 3600 / (v * 1000 / it) for k, v in per.items()}
        cells = [f"{rate[k] / rate['seq']:.2f}×" for k in (1, 8, 32)] + [f"{rate['auto'] / rate['seq']:.2f}× ({chunk})"]
        gf = {k: flops * it / v / 1e9 for k, v in per.items()}   # useful work: the loop's count; v: s per image, `it` its
        best = max((k for k in per if k != 'seq'), key=lambda k: gf[k])
        pct = lambda g: f"{g:.2f} ({100 * g / best_peak:.0f} %)"
        row = (f"| {name} | {it} | {flops / 1e6:.0f} / {eflops[8] / 1e6:.0f} | {rate['seq']:.3g} | {pct(gf['seq'])} | "
               + ' | '.join(cells)
               + f" | {pct(gf[best])} at {best if best == 'auto' else f'K={best}'} |")
        lines.append(row); print(row, flush=True)
    lines += ['', f"total benchmark time {time.perf_counter() - t_start:.0f} s; load average at end: {os.getloadavg()[0]:.1f}"]
    print(lines[-1])
    if a.out: open(a.out, 'w').write('\n'.join(lines) + '\n')

if __name__ == '__main__':
    main()
