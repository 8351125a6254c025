"""Attack throughput: reconstructions per hour of the batched engine against a plain sequential loop.

The sequential loop attacks one image at a time with plain autograd (`create_graph=True`), the way Inverting
Gradients and breaching run. The engine runs vmap chunks of K = 1, 8 and 32 candidates, and `auto` (the chunk size
its calibration picks, calibration time included). Everything runs in one process, same data, same iterations,
interleaved per model, best of 2 rounds (1 for resnet20_4). Reconstructions per hour are reported at 1000 iterations, extrapolated linearly from the
measured iterations; ratios are against the sequential loop.

    .venv/bin/python benchmarks/attack_throughput.py [--iterations 20] [--threads 1] [--device cpu] [--out FILE]
"""
import argparse, math, os, platform, time
import torch
from semsim.attacks import attack_batch, get_attack, target_gradients, _Objective, _adam_chunk, _CALIBRATION
from semsim.core import generator
from semsim.data import load_dataset
from semsim.victims import build_model

def setups(device):
    "(name, model, images, labels) for each benchmarked victim; untrained, seeded."
    fm = load_dataset('fashion_mnist', 'test')
    x28, y28 = fm.floats(range(32)), fm.labels[:32]
    g = generator(0)
    x32, y32 = torch.rand(32, 3, 32, 32, generator=g), torch.randint(0, 10, (32,), generator=g)
    cifar = type(fm.info)('cifar-shaped', [str(i) for i in range(10)], (32, 32), 3, (0.5,) * 3, (0.25,) * 3)
    for name, arch, info, width, x, y in [('lenet 28×28', 'lenet', fm.info, None, x28, y28),
                                          ('convnet16 28×28', 'convnet', fm.info, 16, x28, y28),
                                          ('resnet20_4 32×32', 'resnet20_4', cifar, None, x32, y32)]:
        torch.manual_seed(0)
        yield name, build_model(arch, info, width).eval().to(device), x.to(device), y.to(device)

def engine(model, x, y, iterations, chunk, batched):
    "Attack images x with fixed chunks (the engine's inner loop, as `attack_batch` runs it); returns seconds."
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
    sync(); t0 = time.perf_counter()
    spec = get_attack('ig', iterations)
    t = target_gradients(model, x, y)
    yy = torch.nn.functional.one_hot(y, t[-1].shape[-1]).to(x.dtype)
    x0 = torch.stack([torch.randn(x.shape[1:], generator=generator(i)) for i in range(len(x))]).to(x.device)
    tn = torch.stack([sum((tt[k] ** 2).sum() for tt in t).sqrt() for k in range(len(x))])
    obj = _Objective(model, spec)
    for a in range(0, len(x), chunk):
        s = slice(a, a + chunk)
        _adam_chunk(obj, x0[s], yy[s], [tt[s] for tt in t], tn[s], iterations, batched)
    sync(); return time.perf_counter() - t0

def sequential_loop(model, x, y, iterations):
    "One `attack_batch` call per image on the sequential path (plain autograd); returns seconds."
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
    sync(); t0 = time.perf_counter()
    for i in range(len(x)): attack_batch(model, x[i:i+1], y[i:i+1], 'ig', iterations, seed=[i], batch=1, verbose=False)
    sync(); return time.perf_counter() - t0

def auto(model, x, y, iterations):
    "`attack_batch` with the calibrated chunk size, calibration included; returns (seconds, chunk)."
    _CALIBRATION.clear()
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
    sync(); t0 = time.perf_counter()
    r = attack_batch(model, x, y, 'ig', iterations, batch=None, verbose=False)
    sync(); return time.perf_counter() - t0, r.chunk

def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--iterations', type=int, default=20, help='iterations per attack (lenet, convnet)')
    p.add_argument('--resnet-iterations', type=int, default=3, help='iterations per attack for resnet20_4')
    p.add_argument('--rounds', type=int, default=2, help='interleaved rounds for lenet and convnet (best is kept)')
    p.add_argument('--threads', type=int, default=1, help='torch CPU threads')
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--only', default=None, help='comma-separated victims to run: lenet,convnet,resnet20_4')
    p.add_argument('--out', default=None, help='also write the markdown table to this file')
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    machine = (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
               f"{a.threads} thread(s)" if dev.type == 'cpu' else torch.cuda.get_device_name(dev))
    lines = [f"device: {a.device} ({machine}); load average at start: {os.getloadavg()[0]:.1f}", '',
             '| victim | iterations | sequential loop rec/h | K=1 | K=8 | K=32 | auto (chunk) |', '|---|---|---|---|---|---|---|']
    print('\n'.join(lines), flush=True)
    t_start = time.perf_counter()
    for name, model, x, y in setups(dev):
        if a.only and name.split()[0].replace('16', '') not in a.only.split(','): continue
        it = a.resnet_iterations if name.startswith('resnet') else a.iterations
        n_small = 8
        engine(model, x[:2], y[:2], 1, 2, True); sequential_loop(model, x[:1], y[:1], 1)   # warm-up
        per = {}  # seconds per image, the best of `rounds` interleaved rounds (the machine may be shared)
        for _ in range(1 if name.startswith('resnet') else a.rounds):
            for k, f in [('seq', lambda: sequential_loop(model, x[:n_small], y[:n_small], it) / n_small),
                         (1, lambda: engine(model, x[:n_small], y[:n_small], it, 1, True) / n_small),
                         (8, lambda: engine(model, x[:8], y[:8], it, 8, True) / 8),
                         (32, lambda: engine(model, x, y, it, 32, True) / 32)]:
                per[k] = min(per.get(k, math.inf), f())
        t_auto, chunk = auto(model, x, y, it); per['auto'] = t_auto / 32
        rate = {k: 3600 / (v * 1000 / it) for k, v in per.items()}
        cells = [f"{rate[k] / rate['seq']:.2f}×" for k in (1, 8, 32)] + [f"{rate['auto'] / rate['seq']:.2f}× ({chunk})"]
        row = f"| {name} | {it} | {rate['seq']:.0f} | " + ' | '.join(cells) + ' |'
        lines.append(row); print(row, flush=True)
    lines += ['', f"total benchmark time {time.perf_counter() - t_start:.0f} s; load average at end: {os.getloadavg()[0]:.1f}"]
    print(lines[-1])
    if a.out: open(a.out, 'w').write('\n'.join(lines) + '\n')

if __name__ == '__main__':
    main()
