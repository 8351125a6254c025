"""Adding a metric is one definition: a toy image-level metric (mean absolute error, lower = more leakage), declared by
a package of its own under the entry-point group `semsim.metrics`, flows with no other edit through `semsim metrics`,
the pipeline's metrics and analysis steps, `semsim analyze`, the explorer, active selection and the report (rendered in
its own kernel, which finds the plugin as any new process does)."""
import importlib, os, sys
import numpy as np, pandas as pd, pytest
from conftest import semsim_cli, console_script
from semsim.core import RunDir, read_table, load_png
from semsim.metrics import METRICS, load_metric_plugins, orientation
from semsim.labels import open_labels
from semsim.pipeline import load_config, run_pipeline, current_table, analysis_table, STEPS
from semsim.report import REPORT_STEP
from semsim.explore import run_table, explorer_metrics
from semsim.votes import active_order

TOY = """from semsim.metrics import Metric, Column
def _l1(pairs, settings): return {'l1': (pairs.originals - pairs.recons).abs().mean((1, 2, 3)).numpy()}
L1 = Metric('l1', {'l1': Column(-1)}, {'default': dict(description='mean absolute error on [0,1] (a toy)')},
            _l1, 'torch')
"""


@pytest.fixture
def toy_metric(tmp_path, monkeypatch):
    "The toy metric as an installed plugin package: on this process's path and on every child process's."
    pkg = tmp_path/'plugins'; info = pkg/'toy_l1-0.1.dist-info'; info.mkdir(parents=True)
    (pkg/'toy_l1.py').write_text(TOY)
    (info/'METADATA').write_text('Metadata-Version: 2.1\nName: toy_l1\nVersion: 0.1\n')
    (info/'entry_points.txt').write_text('[semsim.metrics]\nl1 = toy_l1:L1\n')
    monkeypatch.syspath_prepend(str(pkg)); importlib.invalidate_caches()
    monkeypatch.setenv('PYTHONPATH', os.pathsep.join(filter(None, [str(pkg), os.environ.get('PYTHONPATH')])))
    assert 'l1' not in METRICS
    assert load_metric_plugins() == ['l1'] and orientation('l1') == -1
    yield
    METRICS.pop('l1', None); sys.modules.pop('toy_l1', None)


def _labelled_run(tmp_path):
    "A digits experiment measured with psnr and the toy metric; two people label every reconstruction."
    cfg = load_config(dataset='digits', params=[
        ('name', 'toy'), ('n_originals', '8'), ('attack_batch', '8'),
        ('victims', '[{arch: lenet, epochs: 0, seed: [0, 1, 2]}]'), ('attacks', '[{attack: ig, iterations: 5}]'),
        ('metrics.names', '[psnr, l1]'), ('labels.source', 'humans'), ('semsim.epochs', '1'),
        ('analysis.bootstrap', '50')])
    run = RunDir(tmp_path/'toy')
    run_pipeline(cfg, tmp_path, verbose=False, steps=STEPS[:4])
    cur, _ = current_table(run)
    order = {i: k for k, i in enumerate(sorted(cur.image_id.unique()))}
    victim = {m: k for k, m in enumerate(sorted(cur.model_id.unique()))}
    with open_labels(run) as st:      # of each original, some reconstructions recognised
        st.add_many(pd.DataFrame([dict(recon_id=r.recon_id, annotator=a, answer=int(r.class_id)
                                       if (order[r.image_id] + victim[r.model_id]) % 2 else 'cannot')
                                  for r in cur.itertuples() for a in ('alice', 'bob')]))
    return cfg, run


def test_a_plugin_metric_flows_everywhere(tmp_path, toy_metric):
    cfg, run = _labelled_run(tmp_path)
    run_pipeline(cfg, tmp_path, verbose=False, steps=STEPS + [REPORT_STEP])
    # the pipeline's metrics step computed it, with its settings recorded once
    table, meta = read_table(run.reconstructions)
    ok = table[table.status == 'ok']
    assert len(ok) and ok.l1.notna().all()
    r = ok.iloc[0]
    expect = (load_png(run.path/r.original_path) - load_png(run.path/r.recon_path)).abs().mean().item()
    assert abs(r.l1 - expect) < 1e-6
    assert meta['metrics']['l1']['description'] == 'mean absolute error on [0,1] (a toy)'
    # the analysis step correlated it, oriented
    corr = pd.read_csv(run.analysis_dir/'correlations.csv')
    mine = corr[corr.metric == 'l1'].set_index('level')
    assert set(mine.index) == {'image', 'model'} and (mine.orientation == -1).all()
    assert np.isfinite(mine.loc['image', 'auc']) and mine.loc['model', 'n'] == 3    # 3 victims
    # the report, rendered in its own kernel, ranks it beside psnr
    html = run.report_html.read_text()
    assert 'psnr</td>' in html and 'l1</td>' in html
    # the explorer offers it and active selection uses it (disagreement needs two metrics: psnr and l1)
    assert 'l1' in explorer_metrics(run_table(run))
    order = active_order(run, by='disagreement', annotator='carol')
    assert len(order) == len(ok) and order.score.notna().all() and order.score.max() > 0
    # `semsim analyze` on the run's table, and `semsim metrics` on two folders of images
    analysis_table(run).to_csv(tmp_path/'t.csv', index=False)
    a = semsim_cli('analyze', tmp_path/'t.csv', '--out', tmp_path/'a', '--no-figures', '--resamples', '0')
    assert a.returncode == 0, a.stderr[-2000:]
    assert 'l1' in pd.read_csv(tmp_path/'a'/'correlations.csv').metric.tolist()
    folder = run.path/'recon'/r.model_id/r.attack_id
    m = semsim_cli('metrics', '--originals', run.path/'originals', '--recon', folder, '--out', tmp_path/'p.csv',
                   '--metrics', 'psnr,l1', '--quiet')
    assert m.returncode == 0, m.stderr[-2000:]
    pairs = pd.read_csv(tmp_path/'p.csv')
    mine = ok[(ok.model_id == r.model_id) & (ok.attack_id == r.attack_id)].set_index('image_id').l1
    got = pairs.set_index(pairs.name.str.removesuffix('.png')).l1
    assert len(got) == len(mine) and np.allclose(got.loc[mine.index], mine, atol=1e-6)
    # a new process (the console script) lists it among the metrics it can compute
    h = console_script('metrics', '--help')
    assert h.returncode == 0 and 'recog,semsim,l1' in h.stdout, h.stdout[-1500:]
