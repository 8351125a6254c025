"""What ideal batching could give the attack: the same arithmetic as one ordinary batched call of the victim.

One Inverting Gradients iteration on one image is a forward pass at batch 1, the parameter gradient with
`create_graph=True`, the cosine distance (+ TV) to the observed gradient, and the backward of that to the image
(a second-order backward through the first). Batching K attacks cannot do better than running the same
convolutions at batch K in one ordinary call: `ideal_step` takes K = 32 images, computes the *batch-mean*
gradient with `create_graph=True`, its cosine distance to a target and the backward to the 32 images. That is a
different objective (one gradient for the batch, not 32 per-image gradients) but the same convolution shapes with
batch 32 and, as `torch.utils.flop_counter` confirms, the same FLOPs per image as the loop's per-image iteration
(the weight gradient is summed over the batch instead of kept per image; the sum costs what the per-image products
cost). It is the best case of PyTorch's kernels for this arithmetic; no formulation of the per-image objective that
does the same FLOPs can beat it by more than the kernels' variance.

attainable speed-up with ideal batching = (sequential loop's seconds per image-iteration)
                                          / (the batched call's seconds per image)

measured side by side in one process: interleaved rounds, best of rounds, wall clock and CPU time
(`time.process_time`, all threads of the process: robust to other jobs sharing the cores, and it counts threads
that spin as busy). Variants of the ideal call: K = 32 on all threads; two worker threads with one torch thread and
16 images each (how the engine splits 32 on this CPU's two workers); and on one thread, the loop and K = 32 both on
one thread (the arithmetic-only ratio, no threading effects).

    .venv/bin/python benchmarks/attack_bound.py [--rounds 3] [--only convnet64,resnet20_4] [--forward-mode]

`--forward-mode` also times the forward-mode formulation of the image gradient (a prototype, not in the engine):
for the cosine objective d = 1 - <g, t>/(|g||t|) with g = dL/dθ, the image gradient is dd/dx = (d/dx)<g, v> with
v = -(t/(|g||t|) - <g,t> g/(|g|^3 |t|)) held fixed (v = a t + b stopgrad(g)), and <g, v> is the directional
derivative of L along v in parameter space, a JVP: dd/dx = (d/dx) jvp(θ -> L(θ, x), (θ,), (v,)). That is
forward-over-reverse instead of reverse-over-reverse; it needs g first (one ordinary backward), then one JVP with
its backward.
"""
import argparse, math, os, platform, sys, time
from concurrent.futures import ThreadPoolExecutor
import torch
import torch.nn.functional as F
from torch.func import functional_call, jvp
from torch.utils.flop_counter import FlopCounterMode
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from attack_throughput import setups, problem, peak_gflops   # the same victims, data and peak
from semsim.attacks import (get_attack, _adam_chunk, _Objective, _soft_ce, gradient_distance, total_variation,
                            prepare_victim)

K = 32

def clock(f) -> tuple:
    "(wall seconds, CPU seconds of the whole process) that f takes."
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    sync(); w0, c0 = time.perf_counter(), time.process_time(); f(); sync()
    return time.perf_counter() - w0, time.process_time() - c0

class Ideal:
    "The attack step's arithmetic at batch k as one ordinary call: batch-mean gradient, cosine + TV, backward to x."
    def __init__(self, model, x, y):
        self.model, self.params = model, [p for p in model.parameters()]
        self.y = F.one_hot(y, 10).to(x.dtype)
        loss = _soft_ce(model(x), self.y) / len(x)
        self.t = [g.detach() for g in torch.autograd.grad(loss, self.params)]
        self.tv = get_attack('ig').tv

    def step(self, u):
        "The image gradient of the batch objective at u (k images)."
        u = u.detach().requires_grad_()
        g = torch.autograd.grad(_soft_ce(self.model(u.view_as(u)), self.y) / len(u), self.params, create_graph=True)
        d = gradient_distance(g, self.t, 'cosine') + self.tv * total_variation(u)
        return torch.autograd.grad(d, u)[0]

    def run(self, u, steps: int):
        "`steps` signed-gradient steps from u (the update is elementwise and negligible)."
        for _ in range(steps): u = (u - 0.1 * self.step(u).sign()).clamp(0, 1)
        return u

def seq_flops(model, x, y) -> dict:
    "FLOPs of one sequential-loop evaluation on one image: forward / first backward / double backward, and the total."
    spec = get_attack('ig', 1)
    x0, yy, t, tn = problem(model, x[:1], y[:1], spec)
    obj = _Objective(model, spec)
    plist = [v.clone().requires_grad_() for v in obj.params.values()]
    u = x0[0].clone().requires_grad_()
    out = {}
    with FlopCounterMode(display=False) as fc: loss, bn = obj._forward(dict(zip(obj.params, plist)), u, yy[0])
    out['forward'] = fc.get_total_flops()
    with FlopCounterMode(display=False) as fc: g = torch.autograd.grad(loss, plist, create_graph=True)
    out['backward'] = fc.get_total_flops()
    with FlopCounterMode(display=False) as fc:
        total, _ = obj._score(g, bn, u, [tt[0] for tt in t], tn[0], None)
        torch.autograd.grad(total, [u])
    out['double backward'] = fc.get_total_flops()
    with FlopCounterMode(display=False) as fc1: _adam_chunk(obj, x0, yy, t, tn, 1, batched=False)
    with FlopCounterMode(display=False) as fc2: _adam_chunk(obj, x0, yy, t, tn, 2, batched=False)
    out['loop'] = fc2.get_total_flops() - fc1.get_total_flops()   # one more iteration of the real loop
    return out

def sequential(model, x, y, images: int, iterations: int):
    "attack_throughput's sequential loop (`_adam_chunk`, one image at a time): a timed thunk, its evaluations."
    spec = get_attack('ig', iterations)
    probs = [problem(model, x[i:i+1], y[i:i+1], spec) for i in range(images)]
    def run():
        for x0, yy, t, tn in probs: _adam_chunk(_Objective(model, spec), x0, yy, t, tn, iterations, batched=False)
    return run, images * (iterations + 1)   # _adam_chunk evaluates once more after its last step

def two_workers(ideal_pair, u, steps):
    "Two threads, one torch thread each, each running the ideal call on half of u."
    h = len(u) // 2
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda a: a[0].run(a[1], steps), [(ideal_pair[0], u[:h]), (ideal_pair[1], u[h:])]))

def forward_mode_grad(model, params: dict, buffers: dict, u, y, t, tnorm, tv):
    "The image gradient of the cosine objective (+ TV) by forward-over-reverse: g first, then d/du of a JVP along v."
    names = list(params)
    loss_of = lambda p, x: _soft_ce(functional_call(model, ({**dict(zip(names, p))}, buffers), (x[None],)), y[None])
    plist = [params[k].detach().requires_grad_() for k in names]
    g = torch.autograd.grad(loss_of(plist, u.detach()), plist)            # g = dL/dθ at u (no graph needed)
    gn, dot = torch.sqrt(sum((a * a).sum() for a in g)), sum((a * b).sum() for a, b in zip(g, t))
    v = [-(b / (gn * tnorm) - dot * a / (gn ** 3 * tnorm)) for a, b in zip(g, t)]   # dd/dg, held fixed
    ur = u.detach().requires_grad_()
    _, dl = jvp(lambda *p: loss_of(list(p), ur), tuple(p.detach() for p in plist), tuple(v))   # <g(ur), v>
    return torch.autograd.grad(dl + tv * total_variation(ur), ur)[0]

def double_backward_grad(model, params: dict, buffers: dict, u, y, t, tnorm, tv):
    "The same image gradient by the loop's reverse-over-reverse (create_graph=True)."
    names = list(params)
    plist = [params[k].detach().requires_grad_() for k in names]
    ur = u.detach().requires_grad_()
    loss = _soft_ce(functional_call(model, (dict(zip(names, plist)), buffers), (ur[None],)), y[None])
    g = torch.autograd.grad(loss, plist, create_graph=True)
    d = gradient_distance(g, t, 'cosine', tnorm) + tv * total_variation(ur)
    return torch.autograd.grad(d, ur)[0]

def forward_mode(name, model, x, y, rounds: int, reps: int = 3) -> str:
    "Forward-over-reverse against reverse-over-reverse on one image: relative difference and time per image-iteration."
    spec = get_attack('ig', 1)
    x0, yy, t, tn = problem(model, x[:1], y[:1], spec)
    m = prepare_victim(model)
    params = {k: v.detach() for k, v in m.named_parameters()}
    buffers = dict(m.named_buffers())
    args = (m, params, buffers, x0[0], yy[0], [tt[0] for tt in t], tn[0], spec.tv)
    a, b = forward_mode_grad(*args), double_backward_grad(*args)
    rel = ((a - b).norm() / b.norm()).item()
    with FlopCounterMode(display=False) as fc: forward_mode_grad(*args)
    ff = fc.get_total_flops()
    with FlopCounterMode(display=False) as fc: double_backward_grad(*args)
    fb = fc.get_total_flops()
    best = {}
    for _ in range(rounds):
        for what, f in (('double backward', double_backward_grad), ('forward mode', forward_mode_grad)):
            w, c = clock(lambda: [f(*args) for _ in range(reps)])
            best[what] = tuple(min(p, q / reps) for p, q in zip(best.get(what, (math.inf, math.inf)), (w, c)))
    return (f"{name}: forward-over-reverse vs double backward, relative difference of the image gradient {rel:.1e}; "
            f"{ff / 1e6:.0f} vs {fb / 1e6:.0f} MFLOP; {best['forward mode'][0] * 1e3:.1f} vs "
            f"{best['double backward'][0] * 1e3:.1f} ms wall, {best['forward mode'][1] * 1e3:.1f} vs "
            f"{best['double backward'][1] * 1e3:.1f} ms CPU per image-iteration "
            f"(forward mode {best['double backward'][0] / best['forward mode'][0]:.2f}× the speed, wall)")

def bound(name, model, x, y, rounds: int, threads: int, one_thread: bool = True) -> dict:
    "Seconds per image-iteration (wall, CPU) of the sequential loop and of the ideal batched call, best of rounds."
    big = '32×32' in name
    seq_images, seq_it, steps = (2, 2, 1) if big else (4, 5, 3)
    f = seq_flops(model, x, y)
    ideal = Ideal(model, x[:K], y[:K])
    prepared = Ideal(prepare_victim(model), x[:K], y[:K])
    halves = [Ideal(prepare_victim(model), x[a:a + K // 2], y[a:a + K // 2]) for a in (0, K // 2)]
    u0 = torch.rand(K, *x.shape[1:], generator=torch.Generator().manual_seed(1)).to(x.device)
    with FlopCounterMode(display=False) as fc: ideal.step(u0)
    f['ideal per image'] = fc.get_total_flops() / K
    seq_run, seq_evals = sequential(model, x, y, seq_images, seq_it)
    cases = {'loop': (seq_run, seq_evals, threads),
             'K=32': (lambda: ideal.run(u0, steps), K * steps, threads),
             'K=32 prepared': (lambda: prepared.run(u0, steps), K * steps, threads),
             '2 workers × 16': (lambda: two_workers(halves, u0, steps), K * steps, 1)}
    if one_thread:
        cases['loop, 1 thread'] = (seq_run, seq_evals, 1)
        cases['K=32, 1 thread'] = (lambda: prepared.run(u0, steps), K * steps, 1)
    sequential(model, x, y, 1, 1)[0](); ideal.run(u0, 1); prepared.run(u0, 1)   # warm-up (first calls allocate)
    best = {}
    for _ in range(rounds):
        for what, (fn, n, th) in cases.items():
            torch.set_num_threads(th)
            w, c = clock(fn)
            best[what] = tuple(min(p, q / n) for p, q in zip(best.get(what, (math.inf, math.inf)), (w, c)))
    torch.set_num_threads(threads)
    return dict(flops=f, best=best)

def bound_row(name, r, peak: float) -> str:
    "One markdown row: FLOPs check and split, then seconds and ratios."
    f, b = r['flops'], r['best']
    tot = f['forward'] + f['backward'] + f['double backward']
    split = ' / '.join(f"{100 * f[k] / tot:.0f}" for k in ('forward', 'backward', 'double backward'))
    ideal = min(('K=32', 'K=32 prepared', '2 workers × 16'), key=lambda k: b[k][0])
    s = lambda k, i=0: b['loop'][i] / b[k][i]
    pct = lambda k: f"{100 * f['loop'] / b[k][0] / 1e9 / peak:.0f} %"
    ms = lambda k: f"{b[k][0] * 1e3:.1f} ({pct(k)}) / {b[k][1] * 1e3:.1f}"
    one = b.get('loop, 1 thread'), b.get('K=32, 1 thread')
    loop1 = f"{one[0][0] * 1e3:.1f}" if one[0] else '–'
    return (f"| {name} | {f['loop'] / 1e6:.0f} / {f['ideal per image'] / 1e6:.0f} "
            f"({100 * f['ideal per image'] / f['loop'] - 100:+.1f} %) | {split} | {ms('loop')} | {loop1} | "
            f"{ms(ideal)} | **{s(ideal):.2f}×** at {ideal} / {s(ideal, 1):.2f}× | "
            + ' | '.join(f"{s(k):.2f}× / {s(k, 1):.2f}×" for k in ('K=32', 'K=32 prepared', '2 workers × 16'))
            + (f" | {one[0][0] / one[1][0]:.2f}× / {one[0][1] / one[1][1]:.2f}× |" if one[0] else ' | – |'))

BOUND_HEADER = ['| victim | MFLOP per image-iteration: loop / ideal batched (difference) '
                '| FLOP split forward / backward / double backward, % '
                '| loop ms per image-iteration, wall (% of peak) / CPU | loop on 1 thread, ms '
                '| ideal batched ms per image, wall (% of peak) / CPU | attainable speed-up, wall / CPU '
                '| K=32 | K=32 prepared | 2 workers × 16 | 1 thread: loop vs K=32, wall / CPU |',
                '|---|---|---|---|---|---|---|---|---|---|---|']

def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--rounds', type=int, default=3, help='interleaved rounds (best is kept)')
    p.add_argument('--threads', type=int, default=torch.get_num_threads())
    p.add_argument('--device', default='cpu')
    p.add_argument('--only', default=None, help='comma-separated victims: lenet,convnet16,convnet64,resnet20_4')
    p.add_argument('--forward-mode', action='store_true', help='also time the forward-mode image gradient (resnet20_4)')
    p.add_argument('--forward-only', action='store_true',
                   help='only the forward-mode comparison (implies --forward-mode)')
    p.add_argument('--out', default=None, help='also write the markdown to this file')
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    peak = max(peak_gflops(dev).values())
    load = lambda: ' '.join(f'{v:.1f}' for v in os.getloadavg())
    lines = [f"device: {a.device} ({platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
             f"{a.threads} thread(s)); load average at start: {load()}; peak {peak:.1f} GFLOP/s",
             ''] + BOUND_HEADER
    print('\n'.join(lines), flush=True)
    t0 = time.perf_counter()
    for name, model, x, y in setups(dev):
        if a.only and name.split()[0] not in a.only.split(','): continue
        if not a.forward_only:
            row = bound_row(name, bound(name, model, x, y, a.rounds, a.threads, dev.type == 'cpu'), peak)
            lines.append(row); print(row, flush=True)
        if (a.forward_mode or a.forward_only) and name.startswith('resnet20_4'):
            fm = forward_mode(name, model, x, y, a.rounds)
            lines += ['', fm]; print(fm, flush=True)
    lines += ['', f"bound time {time.perf_counter() - t0:.0f} s; load average at end: {load()}"]
    print(lines[-1])
    if a.out: open(a.out, 'w').write('\n'.join(lines) + '\n')

if __name__ == '__main__':
    main()
