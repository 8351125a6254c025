"""Cost as work grows: a synthetic run of 100,000 reconstructions and 500,000 labels.

Builds the run (20 victims x 5,000 originals, 5 annotators each; images are 50 real Fashion-MNIST originals that the
rows share, since only the report's grid and galleries open images), then times, once each:
  votes()                       the labels aggregated per reconstruction            goal <= 2 s
  the labeller's next item      Labeller.answer() = store the answer + find the next  goal <= 50 ms (median of 20)
  analyze (image + model level, two-way bootstrap, 2,000 resamples)                  goal <= 120 s
  the report's render (papermill + nbconvert)                                        goal <= 120 s
Prints a table with the machine. Not a timed test.

    .venv/bin/python benchmarks/scale.py [--models 20] [--originals 5000] [--annotators 5] [--resamples 2000]
"""
import argparse, os, platform, statistics, sys, tempfile, time
from pathlib import Path
import numpy as np, pandas as pd, yaml
from semsim.core import RunDir, update_table, recon_id
from semsim.data import export_originals
from semsim.labels import open_labels, votes, Labeller
from semsim.analysis import analyze
from semsim.pipeline import render_report, analysis_table

def build(path: Path, n_models: int, n_orig: int, n_ann: int, seed: int=0) -> RunDir:
    "The synthetic crossed run: originals.csv, reconstructions.parquet (with metric columns), labels.sqlite."
    run = RunDir(path).mkdir()
    real = export_originals('fashion_mnist', 50, run, seed=seed)
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(real), n_orig)
    orig = real.iloc[pick].reset_index(drop=True)
    orig['image_id'] = [f'fashion_mnist_test_s{i:06d}' for i in range(n_orig)]
    orig.to_csv(run.originals_csv, index=False)
    leak_m, ease_i = np.linspace(-2, 2, n_models), rng.normal(0, 1, n_orig)
    m, i = np.repeat(np.arange(n_models), n_orig), np.tile(np.arange(n_orig), n_models)
    latent = leak_m[m] + ease_i[i] + rng.normal(0, 1, len(m))
    models = np.array([f'convnet-s{k:02d}' for k in range(n_models)])
    t = pd.DataFrame({'dataset': 'fashion_mnist', 'model_id': models[m], 'attack_id': 'ig',
                      'image_id': orig.image_id.values[i], 'class_id': orig.class_id.values[i].astype(int),
                      'original_path': orig.path.values[i], 'recon_path': orig.path.values[i], 'status': 'ok',
                      'attack_loss': 0.1, 'iterations': 100, 'seconds': 1.0,
                      'psnr': 15 + 3 * latent + rng.normal(0, 2, len(m)), 'ssim': 0.4 + 0.1 * latent + rng.normal(0, .1, len(m)),
                      'mse': np.exp(-latent + rng.normal(0, .5, len(m))) / 50, 'lpips': 0.5 - 0.1 * latent + rng.normal(0, .1, len(m))})
    t.insert(0, 'recon_id', [recon_id(a, 'ig', b) for a, b in zip(t.model_id, t.image_id)])
    update_table(run.reconstructions, t)
    p = 1 / (1 + np.exp(-latent))
    lab = pd.DataFrame({'recon_id': np.repeat(t.recon_id.values, n_ann),
                        'annotator': np.tile([f'person{k}' for k in range(n_ann)], len(t)), 'protocol': 'binary',
                        'answer': np.where(rng.random(len(t) * n_ann) < np.repeat(p, n_ann), 'yes', 'no')})
    with open_labels(run) as store: store.add_many(lab)
    cfg = dict(name=run.path.name, dataset='fashion_mnist', labels=dict(threshold=0.5, source='humans'))
    run.config.write_text(yaml.safe_dump(cfg))
    return run

def timed(f):
    t0 = time.perf_counter(); out = f(); return out, time.perf_counter() - t0

def main(a):
    tmp = Path(tempfile.mkdtemp(prefix='semsim-scale-'))
    run, t_build = timed(lambda: build(tmp/'scale', a.models, a.originals, a.annotators))
    n_rec = a.models * a.originals
    v, t_votes = timed(lambda: votes(run, source='humans'))
    lab = Labeller(run, 'newcomer', protocol='binary')
    clicks = []
    for _ in range(20):
        _, dt = timed(lambda: lab.answer('yes')); clicks.append(dt)
    table = analysis_table(run, 0.5)
    with open_labels(run) as store: raw = store.current()
    _, t_analyze = timed(lambda: analyze(table, run.analysis_dir, level='both', labels=raw, n_resamples=a.resamples,
                                         root=run.path, figures=True))
    _, t_render = timed(lambda: render_report(run))
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}")
    print(f"run: {n_rec:,} reconstructions ({a.models} victims x {a.originals:,} originals), "
          f"{n_rec * a.annotators:,} labels; built in {t_build:.0f} s")
    rows = [('votes()', t_votes, 2.0), ("labeller's next item (median of 20)", statistics.median(clicks), 0.05),
            (f'analyze, image + model level, two-way bootstrap x {a.resamples}', t_analyze, 120.0),
            ("report render", t_render, 120.0)]
    print(f"| what | seconds | goal | met |\n|---|---|---|---|")
    for what, s, goal in rows: print(f"| {what} | {s:.3f} | <= {goal:g} | {'yes' if s <= goal else 'NO'} |")
    print(f"(labeller next item: max of 20 = {max(clicks):.3f} s; report at {run.report_html}, "
          f"{run.report_html.stat().st_size / 1e6:.1f} MB)")

if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--models', type=int, default=20, help='victims')
    p.add_argument('--originals', type=int, default=5000, help='originals per victim')
    p.add_argument('--annotators', type=int, default=5, help='labels per reconstruction')
    p.add_argument('--resamples', type=int, default=2000, help='bootstrap resamples')
    main(p.parse_args())
