"""Metrics throughput: pairs per second of `compute_metrics` over a whole run against the per-image loop of the
SemSim paper's code (load both PNGs, scikit-image PSNR/SSIM, MSE, one LPIPS call and one classifier call per pair).

Same run, same images, same metrics (`paper` preset: psnr, mse, ssim, lpips = SqueezeNet at 256×256, and the
evaluation classifier's feat_l2/feat_cos/feat_fid and recog_acc/recog_p_true). Networks are built before either
path is timed. No ImageNet weights exist offline, so LPIPS runs on a seeded random SqueezeNet imported with
`trust=True` into a temporary $TORCH_HOME: its values are meaningless, its cost is the real one. The evaluation
classifier is a small one trained for the benchmark (cost does not depend on its training). Both paths' values are
checked to agree before the ratio is printed.

    .venv/bin/python benchmarks/metrics_throughput.py [--n 40] [--repeat 2] [--threads 1]
"""
import argparse, os, platform, tempfile, time, warnings
from pathlib import Path

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--n', type=int, default=40, help='originals; two stand-in models make 2n pairs')
    ap.add_argument('--repeat', type=int, default=2, help='timings per path (interleaved); the fastest is kept')
    ap.add_argument('--threads', type=int, default=1)
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix='semsim-bench-metrics-'))
    os.environ['SEMSIM_DATA'], os.environ['TORCH_HOME'] = str(tmp/'data'), str(tmp/'torch')
    import numpy as np, pandas as pd, torch, torchvision, torch.nn.functional as F
    import skimage.metrics as skm
    from PIL import Image
    from semsim.core import RunDir, load_png, save_png, read_table, update_table, recon_id
    from semsim.data import export_originals
    from semsim import metrics as M
    torch.set_num_threads(a.threads)

    # a run: n Fashion-MNIST originals, two stand-in models (noise, blur)
    run = RunDir(tmp/'run'); orig = export_originals('fashion_mnist', a.n, run)
    rows = []
    for model_id in ('noise', 'blur'):
        for k, r in orig.iterrows():
            x = load_png(run.path/r.path)[None]
            y = ((x + 0.15 * torch.randn(x.shape, generator=torch.Generator().manual_seed(k))).clamp(0, 1)
                 if model_id == 'noise' else F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False))
            p = save_png(y[0], run.recon_png(model_id, 'ig', r.image_id))
            rows.append(dict(recon_id=recon_id(model_id, 'ig', r.image_id), dataset='fashion_mnist', model_id=model_id,
                             attack_id='ig', image_id=r.image_id, class_id=r.class_id, original_path=r.path,
                             recon_path=str(p.relative_to(run.path)), status='ok', attack_loss=0.0, iterations=0,
                             seconds=0.0))
    update_table(run.reconstructions, pd.DataFrame(rows))

    # networks, built before timing
    torch.manual_seed(0); f = tmp/M.WEIGHTS['squeezenet1_1'].filename
    torch.save(torchvision.models.squeezenet1_1(weights=None).state_dict(), f); M.import_weights(f, trust=True)
    lp, _ = M.lpips_network('squeeze')
    eval_kw = dict(n_train=1000, epochs=1)
    clf, _ = M.eval_classifier('fashion_mnist', **eval_kw)
    groups = {'psnr, mse, ssim (scikit-image)': 'psnr,mse,ssim', 'lpips (SqueezeNet, 256×256)': 'lpips',
              'feat, recog (evaluation classifier)': 'feat,recog'}
    df, _ = read_table(run.reconstructions)
    as_tensor = lambda a: torch.from_numpy(a).float()[None, None] / 255
    up = lambda t: F.interpolate(t.repeat(1, 3, 1, 1), size=(256, 256), mode='bilinear', align_corners=False)

    def paper_loop(metrics):
        "The paper's code: one pair at a time, images read from disk, one network call per pair."
        out, feats = [], {}
        for _, r in df.iterrows():
            o = np.array(Image.open(run.path/r.original_path)); x = np.array(Image.open(run.path/r.recon_path)); v = {}
            if 'psnr' in metrics:
                v.update(psnr=skm.peak_signal_noise_ratio(o, x, data_range=255),
                         ssim=skm.structural_similarity(o, x, data_range=255),
                         mse=skm.mean_squared_error(o / 255, x / 255))
            with torch.no_grad():
                if 'lpips' in metrics: v['lpips'] = lp(up(as_tensor(o)), up(as_tensor(x))).item()
                if 'feat' in metrics:
                    fo, fx = clf.features(as_tensor(o)), clf.features(as_tensor(x)); prob = clf.head(fx).softmax(1)[0]
                    feats.setdefault(r.model_id, []).append((fo, fx))
                    v.update(feat_l2=(fo - fx).norm().item(), recog_p_true=prob[int(r.class_id)].item())
            out.append(v)
        fid = {m: M.frechet_distance(torch.cat([p[0] for p in f]), torch.cat([p[1] for p in f]))
               for m, f in feats.items()}
        return pd.DataFrame(out), fid

    results = []
    for label, metrics in groups.items():
        c_loop = t_loop = c_batched = t_batched = float('inf')
        for _ in range(a.repeat):
            c0, t0 = time.process_time(), time.perf_counter(); loop, fid = paper_loop(metrics)
            t_loop, c_loop = min(t_loop, time.perf_counter() - t0), min(c_loop, time.process_time() - c0)
            c0, t0 = time.process_time(), time.perf_counter()
            table = M.compute_metrics(run, metrics, 'paper', verbose=False, eval_kw=eval_kw)
            t_batched, c_batched = min(t_batched, time.perf_counter() - t0), min(c_batched, time.process_time() - c0)
        table = table.set_index('recon_id').loc[df.recon_id]
        for c in loop.columns: assert np.allclose(table[c].to_numpy(), loop[c].to_numpy(), atol=1e-4), c
        assert all(np.isclose(table.feat_fid[table.model_id == m].iloc[0], v, rtol=1e-4) for m, v in fid.items())
        results.append((label, c_loop, c_batched, t_loop, t_batched))
    results.append(('all of the above', *[sum(r[k] for r in results) for k in range(1, 5)]))

    n = len(df)
    cpu = f"{os.cpu_count()} cores ({platform.processor() or platform.machine()})"
    print(f"## Metrics throughput\n\n`benchmarks/metrics_throughput.py --n {a.n} --repeat {a.repeat} "
          f"--threads {a.threads}`: {n} pairs "
          f"(Fashion-MNIST 28×28, {a.n} originals × 2 stand-in models), preset `paper`.\n"
          f"Machine: {cpu}, shared with other jobs while measured; torch threads: {a.threads}; "
          f"torch {torch.__version__}.\n")
    print(f"Pairs per CPU-second of this process, fastest of {a.repeat} interleaved timings "
          f"(the machine is shared, so CPU time is the steadier measure); wall-clock ratio beside it.\n")
    print("| metrics | per-image loop (the paper's code): pairs/s | `compute_metrics` over the run: pairs/s "
          "| ratio (CPU time) | ratio (wall) |\n|---|---|---|---|---|")
    for label, cl, cb, tl, tb in results:
        print(f"| {label} | {n / cl:.1f} | {n / cb:.1f} | {cl / cb:.2f} | {tl / tb:.2f} |")
    print("\nBoth paths' values agree (psnr, ssim, mse, lpips, feat_l2, recog_p_true to 1e-4; "
          "feat_fid to 1e-4 relative). "
          "LPIPS runs on a seeded random SqueezeNet (no ImageNet weights offline): real cost, meaningless values.")

if __name__ == '__main__':
    warnings.filterwarnings('ignore')
    main()
