"""`torch.compile` of the engine's vmapped attack step, with a persistent on-disk cache: is it worth it?

    .venv/bin/python benchmarks/compile_probe.py [--victim resnet20_4] [--k 8] [--iterations 4]

The script runs itself twice as a child process with the same, initially empty, inductor cache folder
(`TORCHINDUCTOR_CACHE_DIR`, FX-graph and AOTAutograd caches on): the first child compiles cold, the second starts
with the cache the first one left. Each child times, side by side on the same images:
- the sequential loop (`attack_throughput.sequential_loop`: one image at a time, plain autograd),
- the engine's eager vmapped step on K images in one chunk on all threads,
- the same step under `torch.compile` (its first call, the compile, timed on its own),
and checks that the compiled step's image gradients equal the eager ones. Ratios are against the sequential loop,
per image-iteration. A probe, not part of the engine: it says whether compiling belongs in it.
"""
import argparse, json, os, subprocess, sys, tempfile, time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def child(victim: str, k: int, iterations: int) -> dict:
    import torch
    sys.path.insert(0, str(HERE))
    from attack_throughput import setups, problem, sequential_loop, timed
    from semsim.attacks import get_attack, prepare_victim, _Objective, _optimise, _slices
    name, model, x, y = next(s for s in setups(torch.device('cpu')) if s[0].startswith(victim + ' '))
    x, y = x[:k], y[:k]
    spec = get_attack('ig', iterations)
    x0, yy, t, tn = problem(model, x, y, spec)
    eager = _Objective(prepare_victim(model), spec)
    comp = _Objective(prepare_victim(model), spec)
    comp._vstep = torch.compile(comp._vstep, dynamic=False)
    args = (x0, yy, t, tn, x0)
    t0 = time.perf_counter(); gc = comp.batched(*args)[0]; compile_s = time.perf_counter() - t0
    ge = eager.batched(*args)[0]
    rel = float((gc - ge).norm() / ge.norm())
    run = lambda obj: _optimise([obj], x0, yy, t, tn, iterations, _slices(k, k), True)
    out = dict(victim=name, k=k, iterations=iterations, threads=torch.get_num_threads(), compile_s=compile_s,
               grad_rel_diff=rel)
    seq, eag, cmp_ = [], [], []
    for _ in range(2):   # interleaved rounds, best kept
        seq.append(sequential_loop(model, x, y, iterations) / (k * (iterations + 1)))
        eag.append(timed(lambda: run(eager)) / (k * (iterations + 1)))
        cmp_.append(timed(lambda: run(comp)) / (k * (iterations + 1)))
    out.update(seq_ms=1e3 * min(seq), eager_ms=1e3 * min(eag), compiled_ms=1e3 * min(cmp_))
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--victim', default='resnet20_4', help='lenet, convnet16, convnet64 or resnet20_4')
    p.add_argument('--k', type=int, default=8, help='images in the one vmapped chunk')
    p.add_argument('--iterations', type=int, default=4, help='attack iterations per timing')
    p.add_argument('--child', action='store_true', help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        print('RESULT ' + json.dumps(child(a.victim, a.k, a.iterations)), flush=True)
        return
    cache = tempfile.mkdtemp(prefix='semsim-inductor-')
    env = {**os.environ, 'TORCHINDUCTOR_CACHE_DIR': cache, 'TORCHINDUCTOR_FX_GRAPH_CACHE': '1',
           'TORCHINDUCTOR_AUTOGRAD_CACHE': '1'}
    load = lambda: ' '.join(open('/proc/loadavg').read().split()[:3])
    print(f"cache {cache}; load average at start {load()}")
    for label in ('cold cache', 'warm cache'):
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, __file__, '--child', '--victim', a.victim, '--k', str(a.k),
                            '--iterations', str(a.iterations)], env=env, capture_output=True, text=True)
        line = next((l for l in r.stdout.splitlines() if l.startswith('RESULT ')), None)
        if line is None: sys.exit(f"child failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
        res = json.loads(line[7:])
        print(f"{label}: process {time.perf_counter() - t0:.1f} s, first compiled call {res['compile_s']:.1f} s; "
              f"{res['victim']} K={res['k']}, {res['threads']} threads, ms per image-iteration: sequential "
              f"{res['seq_ms']:.1f}, eager vmap {res['eager_ms']:.1f} ({res['seq_ms'] / res['eager_ms']:.2f}x), "
              f"compiled {res['compiled_ms']:.1f} ({res['seq_ms'] / res['compiled_ms']:.2f}x); "
              f"compiled vs eager gradient: {res['grad_rel_diff']:.1e} relative")
    print(f"load average at end {load()}")


if __name__ == '__main__':
    main()
