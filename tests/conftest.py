"Shared pytest fixtures: a small run with real Fashion-MNIST originals and degraded reconstructions."
from pathlib import Path
import numpy as np, pandas as pd, pytest, torch
from semsim.core import RunDir, save_png, load_png, update_table, recon_id
from semsim.data import export_originals

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT/'test-artifacts'

def make_degraded_run(path, n: int=8, models=('blur-m', 'noise-m'), seed: int=0) -> RunDir:
    "A run of `n` Fashion-MNIST originals with one noisy 'reconstruction' per original per model."
    run = RunDir(path).mkdir()
    orig = export_originals('fashion_mnist', n, run, seed=seed)
    g = torch.Generator().manual_seed(seed)
    rows = []
    for k, m in enumerate(models):
        for j, r in orig.iterrows():
            x = load_png(run.path/r.path)
            y = (x + (0.15 + 0.25 * k) * torch.randn(x.shape, generator=g)).clamp(0, 1)
            save_png(y, run.recon_png(m, 'ig', r.image_id))
            rows.append(dict(recon_id=recon_id(m, 'ig', r.image_id), dataset='fashion_mnist', model_id=m, attack_id='ig',
                             image_id=r.image_id, class_id=int(r.class_id), original_path=r.path,
                             recon_path=str(run.recon_png(m, 'ig', r.image_id).relative_to(run.path)),
                             status='ok', attack_loss=0.1, iterations=10, seconds=0.1))
    update_table(run.reconstructions, pd.DataFrame(rows))
    return run
