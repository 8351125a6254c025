"""Probe (the prototype of the engine's `shared` formulation): the attack step with shared-weight batched convolutions
and only the per-image parts done per image, in five variants, checked against the sequential loop and timed
beside it and beside the vmap engine.

The engine's vmap turns every convolution of the double backward into a per-image (grouped) one. Of a convolution's
7F of arithmetic per step, only 3F need each image's own weights (its weight gradient, and the two convolutions of the
double backward with v = d objective / d g). Here the victim runs batched with its shared weights; each parameter is
K-expanded so autograd keeps one gradient per image. The variants differ in how a convolution's per-image parts run:
- `hybrid` (loop): each image's weight gradient by the batch-1 weight-gradient kernel, the double backward's
  per-image convolutions one image at a time;
- `hybrid_bmm`: all of them as batched matrix products on the unfolded input;
- `hybrid_mixed`: bmm for layers of at most 16x16, the loop for larger ones;
- `hybrid_ghost`: where 2 P (Cin kh kw + Cout) < Cout Cin kh kw (P output positions: ResNet20-4's last stage), no
  weight gradient at all: <g, t> = <dy, conv(h, t)> and |g|^2 = <H^T H, D^T D> (Gram matrices), the loop elsewhere.
  This is what `semsim.attacks` runs as `formulation='shared'`;
- `hybrid_ghostmix`: the Gram form, bmm for layers of at most 16x16, the loop elsewhere.

    .venv/bin/python benchmarks/hybrid_probe.py [--k 16] [--threads 1] [--rounds 3] [--steps 2] [--only resnet20_4]
                                                [--two ghost] [--cases loop,hybrid_ghost,...]
"""
import argparse, contextlib, os, sys, time, types
from concurrent.futures import ThreadPoolExecutor
import torch
import torch.nn as nn, torch.nn.functional as F
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from attack_throughput import setups, problem
from semsim.attacks import get_attack, _Objective, prepare_victim, _soft_ce, _torch_threads


def _cb(dy, h, w, stride, padding, mask):
    return torch.ops.aten.convolution_backward(dy, h, w, None, stride, padding, (1, 1), False, (0, 0), 1, mask)


class _ConvBack(torch.autograd.Function):
    "A convolution's backward: the batched input gradient and each image's weight gradient; differentiable once."
    @staticmethod
    def forward(ctx, dy, h, w, stride, padding):
        ctx.save_for_backward(dy, h, w); ctx.conf = (stride, padding)
        dh = _cb(dy, h, w, stride, padding, (True, False, False))[0]
        dw = torch.stack([_cb(dy[k:k + 1], h[k:k + 1], w, stride, padding, (False, True, False))[1]
                          for k in range(len(h))])
        return dh, dw

    @staticmethod
    def backward(ctx, g_dh, g_dw):
        dy, h, w = ctx.saved_tensors; stride, padding = ctx.conf
        d_dy = F.conv2d(g_dh, w, None, stride, padding)                    # shared weights, batched
        d_dy = d_dy + torch.cat([F.conv2d(h[k:k + 1], g_dw[k], None, stride, padding) for k in range(len(h))])
        d_h = torch.cat([_cb(dy[k:k + 1], h[k:k + 1], g_dw[k], stride, padding, (True, False, False))[0]
                         for k in range(len(h))])
        return d_dy, d_h, None, None, None


class _ConvBackBmm(torch.autograd.Function):
    "The same with the per-image parts as batched matrix products on the unfolded input (one GEMM per image)."
    @staticmethod
    def forward(ctx, dy, h, w, stride, padding):
        cols = F.unfold(h, w.shape[2:], padding=padding, stride=stride)               # K x Cin*kh*kw x P
        ctx.save_for_backward(dy, cols, w); ctx.conf = (stride, padding, h.shape[2:])
        dh = _cb(dy, h, w, stride, padding, (True, False, False))[0]
        dw = torch.bmm(dy.flatten(2), cols.transpose(1, 2)).view(len(h), *w.shape)
        return dh, dw

    @staticmethod
    def backward(ctx, g_dh, g_dw):
        dy, cols, w = ctx.saved_tensors; stride, padding, size = ctx.conf
        v = g_dw.flatten(2)                                                            # K x Cout x Cin*kh*kw
        d_dy = F.conv2d(g_dh, w, None, stride, padding) + torch.bmm(v, cols).view_as(dy)
        d_h = F.fold(torch.bmm(v.transpose(1, 2), dy.flatten(2)), size, w.shape[2:], padding=padding, stride=stride)
        return d_dy, d_h, None, None, None


class _GhostBack(torch.autograd.Function):
    "A convolution's backward giving, instead of each image's weight gradient g, only <g, t> and |g|^2 (Gram form)."
    @staticmethod
    def forward(ctx, dy, h, w, tw, stride, padding):
        cols = F.unfold(h, w.shape[2:], padding=padding, stride=stride)               # K x Cin*kh*kw x P
        D, T = dy.flatten(2), tw.flatten(2)                                            # K x Cout x P, K x Cout x CinKK
        TC = torch.bmm(T, cols)                                                        # conv(h, t): K x Cout x P
        Gc, Gd = torch.bmm(cols.transpose(1, 2), cols), torch.bmm(D.transpose(1, 2), D)   # K x P x P
        ctx.save_for_backward(D, cols, T, TC, Gc, Gd, w); ctx.conf = (stride, padding, h.shape[2:], dy.shape)
        dh = _cb(dy, h, w, stride, padding, (True, False, False))[0]
        return dh, torch.stack([(TC * D).sum((1, 2)), (Gc * Gd).sum((1, 2))], 1)

    @staticmethod
    def backward(ctx, g_dh, g_s):
        D, cols, T, TC, Gc, Gd, w = ctx.saved_tensors; stride, padding, size, shape = ctx.conf
        a, b = g_s[:, 0, None, None], 2 * g_s[:, 1, None, None]
        d_dy = F.conv2d(g_dh, w, None, stride, padding) + (a * TC + b * torch.bmm(D, Gc)).view(shape)
        d_cols = a * torch.bmm(T.transpose(1, 2), D) + b * torch.bmm(cols, Gd)
        return d_dy, F.fold(d_cols, size, w.shape[2:], padding=padding, stride=stride), None, None, None, None


class _GhostConv(torch.autograd.Function):
    "conv2d whose 'gradient' for the K x 2 probe is each image's (<g, t>, |g|^2) of this layer's weight."
    @staticmethod
    def forward(ctx, h, probe, w, tw, stride, padding):
        ctx.save_for_backward(h, w, tw); ctx.conf = (stride, padding)
        return F.conv2d(h, w, None, stride, padding)

    @staticmethod
    def backward(ctx, dy):
        h, w, tw = ctx.saved_tensors
        if torch.is_grad_enabled():
            dh, s = _GhostBack.apply(dy, h, w, tw, *ctx.conf)
            return dh, s, None, None, None, None
        return _cb(dy, h, w, *ctx.conf, (True, False, False))[0], None, None, None, None, None


def _ghost_pays(w, x):
    "Gram form cheaper than the weight gradient: 2 P (CinKK + Cout) < Cout CinKK (P: output positions)."
    P = (x.shape[-1] // 1) * (x.shape[-2] // 1)
    return 2 * P * (w[0].numel() + w.shape[0]) < w.numel()


class _ConvM(torch.autograd.Function):
    "A convolution with shared weights whose gradient for the K-expanded weight is per image."
    @staticmethod
    def forward(ctx, h, w_exp, w, stride, padding, mode):
        ctx.save_for_backward(h, w); ctx.conf = (stride, padding); ctx.mode = mode
        return F.conv2d(h, w, None, stride, padding)

    @staticmethod
    def backward(ctx, dy):
        h, w = ctx.saved_tensors
        if torch.is_grad_enabled():                     # the first backward (create_graph): both, differentiable
            dh, dw = (_ConvBackBmm if ctx.mode == 'bmm' or (ctx.mode in ('mixed', 'ghostmix') and h.shape[-1] <= 16)
                      else _ConvBack).apply(dy, h, w, *ctx.conf)
            return dh, dw, None, None, None, None
        return _cb(dy, h, w, *ctx.conf, (True, False, False))[0], None, None, None, None, None   # the second: dh


def _conv(m, x, P):
    g = P['ghost'].get(m.weight)
    if g is not None and m.bias is None:
        Ho = (x.shape[2] + 2 * m.padding[0] - m.kernel_size[0]) // m.stride[0] + 1
        Wo = (x.shape[3] + 2 * m.padding[1] - m.kernel_size[1]) // m.stride[1] + 1
        if 2 * Ho * Wo * (m.weight[0].numel() + m.weight.shape[0]) < m.weight.numel():   # the Gram form pays
            g[2].append(True)
            return _GhostConv.apply(x, g[0], m.weight.detach(), g[1], m.stride, m.padding)
    y = _ConvM.apply(x, P[m.weight], m.weight.detach(), m.stride, m.padding, P['mode'])
    return y if m.bias is None else y + P[m.bias][:, :, None, None]

CL = [os.environ.get('CL') == '1']

def _bn(m, x, P):
    r = (m.running_var + m.eps).rsqrt()
    scale = r * P[m.weight]; shift = P[m.bias] - m.running_mean * scale
    return x * scale[:, :, None, None] + shift[:, :, None, None]

def _linear(m, x, P):
    y = torch.einsum('ki,koi->ko', x, P[m.weight])
    return y if m.bias is None else y + P[m.bias]

@contextlib.contextmanager
def per_image(model, P):
    "Within the block, `model`'s convolutions, BatchNorms and linear layers read the K-expanded parameters P."
    patched = []
    for m in model.modules():
        f = (_conv if isinstance(m, nn.Conv2d) else _bn if isinstance(m, nn.modules.batchnorm._BatchNorm)
             else _linear if isinstance(m, nn.Linear) else None)
        if f: m.forward = types.MethodType(lambda self, x, f=f: f(self, x, P), m); patched.append(m)
    try: yield
    finally:
        for m in patched: del m.forward


class Hybrid:
    "The IG objective's image gradient for K images at once (cosine distance + TV, known labels, pixel space)."
    def __init__(self, model, spec, mode='loop'):
        self.model, self.tv, self.mode = model.eval(), spec.tv, mode
        self.params = [p for p in model.parameters()]

    def step(self, u, y, t, tnorm):
        K = len(u)
        exp = [p.detach().expand(K, *p.shape).requires_grad_() for p in self.params]
        P = dict(zip(self.params, exp)); P['mode'] = self.mode
        GHOST = P['ghost'] = {}
        if self.mode in ('ghost', 'ghostmix'):
            for p, tt in zip(self.params, t):
                if p.dim() == 4: GHOST[p] = (u.new_zeros(K, 2).requires_grad_(), tt, [])
        u = u.detach().requires_grad_()
        with per_image(self.model, P):
            out = self.model(u.contiguous(memory_format=torch.channels_last) if CL[0] else u)
        loss = -(y * F.log_softmax(out, -1)).sum()
        ghosts = [(k, v[0]) for k, v in GHOST.items() if v[2]]
        inputs = [e for p, e in zip(self.params, exp) if not (p in GHOST and GHOST[p][2])] + [pr for _, pr in ghosts]
        got = torch.autograd.grad(loss, inputs, create_graph=True)
        n = len(inputs) - len(ghosts)
        tt_ = [tt for p, tt in zip(self.params, t) if not (p in GHOST and GHOST[p][2])]
        dot = sum(torch.linalg.vecdot(a.flatten(1), b.flatten(1)) for a, b in zip(got[:n], tt_))
        sq = sum(torch.linalg.vecdot(a.flatten(1), a.flatten(1)) for a in got[:n])
        for s_ in got[n:]: dot, sq = dot + s_[:, 0], sq + s_[:, 1]
        gn = sq.sqrt()
        rec = 1 - dot / (gn * tnorm)
        tv = ((u[..., :, 1:] - u[..., :, :-1]).abs().flatten(1).mean(1)
              + (u[..., 1:, :] - u[..., :-1, :]).abs().flatten(1).mean(1))
        total = rec + self.tv * tv
        return torch.autograd.grad(total.sum(), u)[0], total.detach(), rec.detach()


def clock(f):
    w0, c0 = time.perf_counter(), time.process_time(); f(); return time.perf_counter() - w0, time.process_time() - c0


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--k', type=int, default=16); p.add_argument('--threads', type=int, default=1)
    p.add_argument('--rounds', type=int, default=3); p.add_argument('--steps', type=int, default=2)
    p.add_argument('--only', default='resnet20_4')
    p.add_argument('--two', default='ghost', help='the formulation the two workers run')
    p.add_argument('--cases', default=None, help='comma-separated subset of the cases to time')
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    spec = get_attack('ig', 1)
    for name, model, x, y in setups('cpu', max(a.k, 2 * a.k if a.threads > 1 else a.k)):
        if not any(o in name for o in a.only.split(',')): continue
        x0, yy, t, tn = problem(model, x, y, spec)
        prepared = prepare_victim(model)
        seq = _Objective(prepared, spec)
        plain = _Objective(model, spec)
        hyb = Hybrid(prepare_victim(model), spec)
        hbmm = Hybrid(prepare_victim(model), spec, 'bmm')
        hmix = Hybrid(prepare_victim(model), spec, 'mixed')
        hgh = Hybrid(prepare_victim(model), spec, 'ghost')
        K = a.k
        gs, _, ts, rs = seq.step(x0[:K], yy[:K], [tt[:K] for tt in t], tn[:K], batched=False)
        gh, th, rh = hyb.step(x0[:K], yy[:K], [tt[:K] for tt in t], tn[:K])
        rel = ((gh - gs).norm() / gs.norm()).item()
        gb = hbmm.step(x0[:K], yy[:K], [tt[:K] for tt in t], tn[:K])[0]
        gg, tg, _ = hgh.step(x0[:K], yy[:K], [tt[:K] for tt in t], tn[:K])
        print(f"  ghost vs the loop: {((gg - gs).norm() / gs.norm()).item():.2e}, "
              f"objective {(tg - ts).abs().max():.1e}")
        print(f"  bmm vs the loop: {((gb - gs).norm() / gs.norm()).item():.2e}")
        print(f"{name}: image gradient vs the sequential loop: {rel:.2e} relative; "
              f"objective {(th - ts).abs().max():.1e}")
        steps = a.steps
        def loop(): [plain.step(x0[:K], yy[:K], [tt[:K] for tt in t], tn[:K], batched=False) for _ in range(steps)]
        def loop_prep(): [seq.step(x0[:K], yy[:K], [tt[:K] for tt in t], tn[:K], batched=False) for _ in range(steps)]
        def hybrid(): [hyb.step(x0[:K], yy[:K], [tt[:K] for tt in t], tn[:K]) for _ in range(steps)]
        def hybrid_bmm(): [hbmm.step(x0[:K], yy[:K], [tt[:K] for tt in t], tn[:K]) for _ in range(steps)]
        def hybrid_mixed(): [hmix.step(x0[:K], yy[:K], [tt[:K] for tt in t], tn[:K]) for _ in range(steps)]
        def hybrid_ghost(): [hgh.step(x0[:K], yy[:K], [tt[:K] for tt in t], tn[:K]) for _ in range(steps)]
        def vmapped(): [seq.step(x0[:K], yy[:K], [tt[:K] for tt in t], tn[:K], batched=True) for _ in range(steps)]
        hyb2 = [Hybrid(prepare_victim(model), spec, a.two) for _ in range(2)]
        def two_workers():
            with _torch_threads(1), ThreadPoolExecutor(2) as pool:
                list(pool.map(lambda w: [hyb2[w].step(x0[w * K:(w + 1) * K], yy[w * K:(w + 1) * K],
                                                      [tt[w * K:(w + 1) * K] for tt in t], tn[w * K:(w + 1) * K])
                                         for _ in range(steps)], range(2)))
        cases = dict(loop=loop, loop_prepared=loop_prep, hybrid=hybrid, hybrid_bmm=hybrid_bmm,
                     hybrid_mixed=hybrid_mixed, hybrid_ghost=hybrid_ghost, vmap=vmapped)
        hgm = Hybrid(prepare_victim(model), spec, 'ghostmix')
        cases['hybrid_ghostmix'] = lambda: [hgm.step(x0[:K], yy[:K], [tt[:K] for tt in t], tn[:K])
                                            for _ in range(steps)]
        if a.threads > 1: cases['hybrid_2workers'] = two_workers
        if a.cases: cases = {k: v for k, v in cases.items() if k in a.cases.split(',')}
        best = {k: (float('inf'), float('inf')) for k in cases}
        vmapped()   # warm-up (vmap traces)
        hgh.step(x0[:K], yy[:K], [tt[:K] for tt in t], tn[:K])

        for _ in range(a.rounds):
            for k, f in cases.items():
                w, c = clock(f); n = steps * K * (2 if k == 'hybrid_2workers' else 1)
                best[k] = (min(best[k][0], w / n * 1e3), min(best[k][1], c / n * 1e3))
        base = best['loop']
        for k, (w, c) in best.items():
            print(f"  {k:16s} {w:8.1f} ms wall {c:8.1f} ms CPU per image-step   {base[0] / w:5.2f}x wall "
                  f"{base[1] / c:5.2f}x CPU")


if __name__ == '__main__':
    main()
