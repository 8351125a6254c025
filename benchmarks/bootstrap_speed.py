"""Bootstrap speed: the two-way cluster bootstrap of a crossed table, as `semsim analyze` runs it.

A synthetic crossed table of 14 victims x 600 originals (8,400 reconstructions) with 5 metrics; 2,000 two-way
(models x originals) resamples of every metric's image-level Spearman and AUC (`resampled_image_stats`, the engine
behind `image_level` and `compare_metrics`), timed end to end, next to the same number of iid resamples and the
whole pooled `image_level` call. Before timing, one resample is checked against scipy / scikit-learn on the table
with its rows repeated as drawn. The machine (CPU count, load average) is printed with the times; the fastest of
`--repeat` runs is kept.

    .venv/bin/python benchmarks/bootstrap_speed.py [--models 14] [--images 600] [--resamples 2000] [--repeat 2]
"""
import argparse, os, platform, time, warnings


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--models', type=int, default=14)
    ap.add_argument('--images', type=int, default=600)
    ap.add_argument('--resamples', type=int, default=2000)
    ap.add_argument('--repeat', type=int, default=2, help='timings per path; the fastest is kept')
    a = ap.parse_args()
    import numpy as np, scipy.stats as stats
    from sklearn.metrics import roc_auc_score
    from semsim.analysis import (synthetic_study, prepare_table, resampled_image_stats, resample_weights,
                                 weighted_spearman, weighted_auc, image_level, _codes)
    from semsim.metrics import orientation
    table = synthetic_study(n_models=a.models, n_images=a.images, seed=0)[0]
    d, metrics = prepare_table(table)
    x = {m: orientation(m) * d[m].values for m in metrics}
    h, rec, codes = d.human_rate.values, d.recognized.values, _codes(d)
    w = resample_weights(*codes, 'two-way', 1, np.random.default_rng(1))
    rows = np.repeat(np.arange(len(d)), w[0].astype(int))
    assert abs(weighted_spearman(x['psnr'], h, w)[0] - stats.spearmanr(x['psnr'][rows], h[rows]).statistic) < 1e-9
    assert abs(weighted_auc(rec, x['psnr'], w)[0] - roc_auc_score(rec[rows], x['psnr'][rows])) < 1e-9

    def best(f):
        ts = []
        for _ in range(a.repeat):
            t0 = time.perf_counter(); f(); ts.append(time.perf_counter() - t0)
        return min(ts)
    t2 = best(lambda: resampled_image_stats(x, h, rec, *codes, 'two-way', a.resamples, seed=0))
    t1 = best(lambda: resampled_image_stats(x, h, rec, *codes, 'iid', a.resamples, seed=0))
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        ti = best(lambda: image_level(table, per_model=False, n_resamples=a.resamples))
    print(f'machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, '
          f'load average {os.getloadavg()[0]:.1f} (1 min)')
    print(f'table: {a.models} models x {a.images} originals = {len(d)} rows, '
          f'{len(metrics)} metrics ({", ".join(metrics)})')
    print(f'{a.resamples} two-way resamples, Spearman + AUC of every metric: {t2:.1f} s')
    print(f'{a.resamples} iid resamples, the same statistics:                  {t1:.1f} s '
          f'(two-way / iid = {t2 / t1:.2f})')
    print(f'image_level (pooled, point estimates + two-way intervals):        {ti:.1f} s')


if __name__ == '__main__':
    main()
