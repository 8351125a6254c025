"""Cost as work grows: a synthetic run of 100,000 reconstructions and 500,000 labels.

Builds a run laid out as the pipeline lays one out (config.yaml from `load_config`, steps.json with the current
keys, real Fashion-MNIST originals from `export_originals`, one PNG per reconstruction, the paper preset's metric
columns, a SemSim folder, labels.sqlite), with 20 victims x 5,000 originals and 5 annotators. Metric values and
answers are synthetic: they follow one latent leakage (victim + original + noise). Then times, once each:
  votes()                       the labels aggregated per reconstruction                 goal <= 2 s
  the labeller's next item      a click as the widget makes it: Labeller.answer() (store the answer, find the next)
                                and its progress count                                    goal <= 50 ms (median of 20)
                                (an annotator 20 short of the whole run, and a newcomer)
  analyze                       the pipeline's analysis step: image + model level, two-way bootstrap, noise
                                ceiling, figures (what `make report` runs)                goal <= 120 s
  the report's render           `render_report` (papermill + nbconvert)                   goal <= 120 s
Prints a markdown table with the machine. Not a timed test.

    .venv/bin/python benchmarks/scale.py [--models 20] [--originals 5000] [--annotators 5] [--resamples 2000]
"""
import argparse, io, json, os, platform, statistics, sys, tempfile, time
from pathlib import Path
import numpy as np, pandas as pd
from PIL import Image
from semsim.core import RunDir, update_table, recon_id, load_png, to_uint8, write_json_atomic
from semsim.data import export_originals
from semsim.labels import open_labels, Labeller
from semsim.votes import votes
from semsim.pipeline import load_config, write_config, current_keys, label_votes, _analysis_work, _metric_columns
from semsim.report import render_report

def config(name: str, n_models: int, n_orig: int, resamples: int) -> dict:
    "The experiment config such a run would have: n_models untrained ConvNets (seeds 0..), one IG attack, humans."
    victims = [dict(arch='convnet', width=8, variant='none', epochs=0, seed=k) for k in range(n_models)]
    return load_config(dataset='fashion_mnist', params=[
        ('name', name), ('n_originals', str(n_orig)), ('victims', json.dumps(victims)),
        ('labels.source', 'humans'), ('analysis.bootstrap', str(resamples))])

def metric_values(latent: np.ndarray, model: np.ndarray, rng) -> dict:
    "Every column of the paper preset's metrics, each following the latent leakage in its declared direction."
    n, noise = len(latent), lambda s: rng.normal(0, s, len(latent))
    per_model = lambda v: pd.Series(v).groupby(model).transform('mean').to_numpy()   # set-level: one value a victim
    p_true = 1 / (1 + np.exp(-latent + noise(1)))
    return dict(psnr=15 + 3 * latent + noise(2), mse=np.exp(-latent + noise(.5)) / 50,
                ssim=np.clip(0.4 + 0.1 * latent + noise(.1), -1, 1),
                lpips=np.clip(0.5 - 0.1 * latent + noise(.1), 0, None),
                fid_paper=per_model(100 - 20 * latent), feat_l2=np.exp(-latent / 2 + noise(.3)),
                feat_cos=np.clip(0.5 - 0.15 * latent + noise(.1), 0, 2), feat_fid=per_model(50 - 10 * latent),
                recog_acc=(p_true > 0.5).astype(float), recog_p_true=p_true,
                recog_acc_paper=(rng.random(n) < p_true).astype(float),
                semsim=np.clip(0.6 - 0.15 * latent + noise(.15), 0, 2))

def recon_pngs(run: RunDir, orig: pd.DataFrame, rows: pd.DataFrame, latent: np.ndarray, rng):
    "One PNG per reconstruction: its original, blurred towards grey and noised the less the more it leaks."
    imgs = {r.image_id: to_uint8(load_png(run.file(r.path))).astype(np.float32) for r in orig.itertuples()}
    w = 1 / (1 + np.exp(-latent))
    for k, r in enumerate(rows.itertuples()):
        a = w[k] * imgs[r.image_id] + (1 - w[k]) * 128 + rng.normal(0, 40 * (1 - w[k]), (28, 28))
        buf = io.BytesIO(); Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(buf, format='PNG')
        p = run.file(r.recon_path); p.parent.mkdir(parents=True, exist_ok=True); p.write_bytes(buf.getvalue())

def semsim_folder(run: RunDir, images: list, rng):
    "model.json of a SemSim trained on 80 % of the originals (what the report reads; no weights: scores are synthetic)."
    train = sorted(rng.choice(images, int(0.8 * len(images)), replace=False).tolist())
    write_json_atomic(run.semsim_dir('convnet-paper-triplet-s0-scale')/'model.json', dict(
        semsim_id='convnet-paper-triplet-s0-scale', score='unit', distance='synthetic scores; lower = more leakage',
        label_source=dict(kind='humans'), split=dict(by='image_id', train_images=train,
                                                     test_images=sorted(set(images) - set(train)))))

def build(path: Path, n_models: int, n_orig: int, n_ann: int, resamples: int, seed: int=0) -> tuple:
    "The synthetic run; returns (run, cfg, keys, latent leakage per reconstruction, seconds per part)."
    t, run = {}, RunDir(path).mkdir()
    cfg = config(path.name, n_models, n_orig, resamples)
    write_config(cfg, run)
    t0 = time.perf_counter()
    orig = export_originals(cfg['dataset'], cfg['n_originals'], run, seed=cfg['seed'])
    keys = current_keys(cfg, run)
    (attack,) = keys['attacks']
    rng = np.random.default_rng(seed)
    m, i = np.repeat(np.arange(n_models), n_orig), np.tile(np.arange(n_orig), n_models)
    leak_m, ease_i = np.linspace(-2, 2, n_models), rng.normal(0, 1, n_orig)
    latent = leak_m[m] + ease_i[i] + rng.normal(0, 1, len(m))
    models, images = np.array(keys['models']), orig.image_id.to_numpy()
    rows = pd.DataFrame({'recon_id': keys['recon_ids'], 'dataset': cfg['dataset'], 'model_id': models[m],
                         'attack_id': attack, 'image_id': images[i], 'class_id': orig.class_id.to_numpy()[i],
                         'original_path': orig.path.to_numpy()[i],
                         'recon_path': [f'recon/{a}/{attack}/{b}.png' for a, b in zip(models[m], images[i])],
                         'status': 'ok', 'attack_loss': np.exp(-latent), 'iterations': 300, 'seconds': 1.0})
    assert (rows.recon_id == [recon_id(a, attack, b) for a, b in zip(rows.model_id, rows.image_id)]).all()
    t['originals + table'] = time.perf_counter() - t0; t0 = time.perf_counter()
    recon_pngs(run, orig, rows, latent, rng)
    t['reconstruction PNGs'] = time.perf_counter() - t0; t0 = time.perf_counter()
    cols = metric_values(latent, m, rng)
    assert set(cols) == {c for n in cfg['metrics']['names'] + ['semsim'] for c in _metric_columns(n, 'paper')}
    update_table(run.reconstructions, rows.assign(**cols), meta={'metrics': {
        c: dict(preset='paper', note='synthetic values (scale benchmark)') for c in cols}})
    semsim_folder(run, list(images), rng)
    write_json_atomic(run.path/'steps.json', dict(current=keys))
    t['metrics + steps'] = time.perf_counter() - t0; t0 = time.perf_counter()
    p = 1 / (1 + np.exp(-latent))
    lab = pd.DataFrame({'recon_id': np.repeat(rows.recon_id.to_numpy(), n_ann),
                        'annotator': np.tile([f'person{k}' for k in range(n_ann)], len(rows)), 'protocol': 'binary',
                        'answer': np.where(rng.random(len(rows) * n_ann) < np.repeat(p, n_ann), 'yes', 'no')})
    last = f'person{n_ann - 1}'     # the last annotator leaves their final 20 for the benchmark's clicks
    probe = Labeller(run, last, protocol='binary'); left = set(probe.order[-20:]); probe.store.close()
    lab = lab[~((lab.annotator == last) & lab.recon_id.isin(left))]
    with open_labels(run) as store: store.add_many(lab)
    t['labels'] = time.perf_counter() - t0
    return run, cfg, keys, dict(zip(rows.recon_id, p)), t

def timed(f):
    t0 = time.perf_counter(); out = f(); return out, time.perf_counter() - t0

def clicks(run: RunDir, annotator: str, p: dict, rng, n: int=20) -> list:
    "Seconds of each of `n` clicks (answer stored, next item found, progress counted) in a fresh labelling session."
    lab, out = Labeller(run, annotator, protocol='binary'), []
    for _ in range(n):
        ans = 'yes' if rng.random() < p[lab.current] else 'no'
        out.append(timed(lambda: (lab.answer(ans), lab.progress))[1])
    lab.store.close()
    return out

def cpu_name() -> str:
    try: return next(l.split(':', 1)[1].strip() for l in open('/proc/cpuinfo') if l.startswith('model name'))
    except (OSError, StopIteration): return platform.processor() or platform.machine()

def main(a):
    tmp = Path(a.out or tempfile.mkdtemp(prefix='semsim-scale-'))
    load0 = os.getloadavg()
    (run, cfg, keys, p, parts), t_build = timed(lambda: build(tmp/'scale', a.models, a.originals, a.annotators,
                                                               a.resamples))
    n_rec = a.models * a.originals
    rng = np.random.default_rng(1)
    say = lambda *m: print('[scale]', *m, file=sys.stderr, flush=True)
    say(f'built in {t_build:.0f} s', parts)
    v, t_votes = timed(lambda: votes(run, source='humans')); say(f'votes {t_votes:.3f} s')
    veteran = clicks(run, f'person{a.annotators - 1}', p, rng)
    newcomer = clicks(run, 'newcomer', p, rng)
    say(f'clicks {statistics.median(veteran) * 1e3:.2f} / {statistics.median(newcomer) * 1e3:.2f} ms')
    with open_labels(run) as store: n_labels = len(store.current())
    state, t_label_votes = timed(lambda: dict(current=keys, votes=label_votes(cfg, run, keys)))
    _, t_analyze = timed(lambda: _analysis_work(cfg, run, state, None, False)); say(f'analyze {t_analyze:.1f} s')
    write_json_atomic(run.path/'pipeline.json', dict(
        seconds={'analysis': round(t_analyze, 1)}, finished=time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()),
        outcome={'originals': 'exported', 'victims': 'synthetic (scale benchmark)', 'attacks': 'synthetic',
                 'metrics': 'synthetic', 'labels': 'synthetic', 'semsim': 'synthetic', 'analysis': 'ran'}))
    _, t_render = timed(lambda: render_report(run))
    load1 = os.getloadavg()
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores, {platform.platform()}; load average (1/5/15 min) "
          f"{'/'.join(f'{x:.2f}' for x in load0)} at the start, {'/'.join(f'{x:.2f}' for x in load1)} at the end")
    print(f"run: {n_rec:,} reconstructions ({a.models} victims x {a.originals:,} originals), {n_labels:,} labels "
          f"({a.annotators} annotators, {len(v):,} reconstructions with votes); built in {t_build:.0f} s "
          f"({', '.join(f'{k} {s:.0f} s' for k, s in parts.items())})")
    med_v, med_n = statistics.median(veteran), statistics.median(newcomer)
    rows = [('votes()', t_votes, 2.0),
            (f"labeller's next item, annotator 20 short of all {n_rec:,} (median of 20)", med_v, 0.05),
            ("labeller's next item, newcomer (median of 20)", med_n, 0.05),
            (f'analyze: the pipeline step, image + model level, two-way bootstrap x {a.resamples}, noise ceiling, '
             f'figures', t_analyze, 120.0),
            ('report render (`render_report`: papermill + nbconvert)', t_render, 120.0)]
    print("| what | seconds | goal | met |\n|---|---|---|---|")
    for what, s, goal in rows: print(f"| {what} | {s:.4f} | <= {goal:g} | {'yes' if s <= goal else 'NO'} |")
    print(f"(next item max of 20: annotator {max(veteran) * 1e3:.1f} ms, newcomer {max(newcomer) * 1e3:.1f} ms; "
          f"the pipeline's "
          f"label_votes before analyze {t_label_votes:.1f} s; report {run.report_html}, "
          f"{run.report_html.stat().st_size / 1e6:.1f} MB; analysis/scatter.html "
          f"{(run.analysis_dir/'scatter.html').stat().st_size / 1e6:.1f} MB)")

if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--models', type=int, default=20, help='victims')
    p.add_argument('--originals', type=int, default=5000, help='originals per victim')
    p.add_argument('--annotators', type=int, default=5, help='labels per reconstruction')
    p.add_argument('--resamples', type=int, default=2000, help='bootstrap resamples')
    p.add_argument('--out', default=None, help='folder to build the run in (default: a new temporary folder)')
    main(p.parse_args())
