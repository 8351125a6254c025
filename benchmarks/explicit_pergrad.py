"""Prototype, not in the engine: per-sample weight gradients written out (unfold + bmm for convolutions, outer
products for linear layers, elementwise for eval BatchNorm) from ONE batched backward to the layer outputs, against
the vmap engine and the sequential loop; checks the image gradient equals the sequential one, prints CPU ms per
image-iteration. `.venv/bin/python benchmarks/explicit_pergrad.py THREADS resnet20_4,convnet64`"""
import time, torch, torch.nn as nn, torch.nn.functional as F, sys
sys.path.insert(0, str(__import__('pathlib').Path(__file__).parent))
from attack_throughput import setups, problem
from semsim.attacks import get_attack, _Objective, prepare_victim, _EvalBatchNorm, total_variation, _soft_ce
torch.set_num_threads(int(sys.argv[1]) if len(sys.argv)>1 else 1)
names = sys.argv[2].split(',') if len(sys.argv)>2 else ['resnet20_4']

class Explicit:
    def __init__(self, model):
        self.model = model
        for m in model.modules():
            if isinstance(m, nn.ReLU): m.inplace = False
        self.mods = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear, _EvalBatchNorm))]
        pid = {id(p): k for k, p in enumerate(model.parameters())}
        self.slots = []
        for m in self.mods:
            self.slots.append([pid[id(p)] for p in [m.weight, m.bias] if p is not None])
        self.np = len(pid)
        self.seen = {}
        for m in self.mods: m.register_forward_hook(self._hook)
    def _hook(self, m, inp, out): self.seen[m] = (inp[0], out)
    def pergrad(self, m, a, d):
        K = len(a)
        if isinstance(m, nn.Conv2d):
            u = F.unfold(a, m.kernel_size, m.dilation, m.padding, m.stride)
            df = d.flatten(2)
            gw = torch.bmm(df, u.transpose(1, 2)).view(K, *m.weight.shape)
            return [gw] + ([df.sum(2)] if m.bias is not None else [])
        if isinstance(m, nn.Linear):
            return [d[:, :, None] * a[:, None, :]] + ([d] if m.bias is not None else [])
        inv = (m.running_var + m.eps).rsqrt().view(1, -1, 1, 1)
        return [(d * (a - m.running_mean.view(1, -1, 1, 1)) * inv).sum((2, 3)), d.sum((2, 3))]
    def step(self, x, y, t, tnorm, tv):
        x = x.detach().requires_grad_()
        self.seen.clear()
        logits = self.model(x)
        loss = _soft_ce(logits, y)   # the sum over the K images: each image's gradient is its own
        outs = [self.seen[m][1] for m in self.mods]
        ds = torch.autograd.grad(loss, outs, create_graph=True)
        g = [None] * self.np
        for m, d, sl in zip(self.mods, ds, self.slots):
            for k, v in zip(sl, self.pergrad(m, self.seen[m][0], d)): g[k] = v
        dot = sum((a * b).flatten(1).sum(1) for a, b in zip(g, t))
        n2 = sum((a * a).flatten(1).sum(1) for a in g)
        rec = 1 - dot / (n2.sqrt() * tnorm)
        total = rec + tv * torch.vmap(total_variation)(x)   # the attack's own TV, per image
        return torch.autograd.grad(total.sum(), x)[0], total.detach()

def cpu(f, n=3):
    best = 1e9
    for _ in range(n):
        t0 = time.process_time(); f(); best = min(best, time.process_time() - t0)
    return best

spec = get_attack('ig', 2)
for name, model, x, y in setups('cpu'):
    if not any(n in name for n in names): continue
    for K in (8, 32):
        x0, yy, t, tn = problem(model, x[:K], y[:K], spec)
        ob = _Objective(prepare_victim(model), spec)
        ex = Explicit(prepare_victim(model))
        gv, _, _, _ = ob.step(x0, yy, t, tn, True)
        gs, _, tot_s, _ = ob.step(x0, yy, t, tn, False)
        ge, tot_e = ex.step(x0, yy, t, tn, spec.tv)
        rel = lambda a, b: ((a - b).norm() / b.norm()).item()
        print(name, K, 'rel vmap/seq', rel(gv, gs), 'explicit/seq', rel(ge, gs),
              'tot', (tot_e - tot_s).abs().max().item(), flush=True)
        tv_ = cpu(lambda: ob.step(x0, yy, t, tn, True), 2) / K
        te = cpu(lambda: ex.step(x0, yy, t, tn, spec.tv), 2) / K
        ts = cpu(lambda: ob.step(x0[:4], yy[:4], [a[:4] for a in t], tn[:4], False), 2) / 4
        print(f'  ms/img-iter CPU: seq {ts*1e3:.1f} vmap {tv_*1e3:.1f} ({ts/tv_:.2f}x) '
              f'explicit {te*1e3:.1f} ({ts/te:.2f}x)', flush=True)
