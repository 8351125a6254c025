"""End to end: `semsim report` through papermill on a tiny experiment (a rerun recomputes nothing and says so per
step; a run's own config.yaml is accepted back), results keyed by their settings (a config with other iterations never
reports old reconstructions), SemSim retrained when the labels change, configs validated before any work (and the
shipped examples/ pass `--check`), and a Dask sweep that loses a worker mid-way and completes on rerun with every
result present exactly once."""
import json, os, signal, threading, time
import pandas as pd, pytest, yaml
from conftest import ROOT, semsim_cli, console_script
from semsim.core import RunDir, read_table
from semsim.pipeline import (load_config, run_pipeline, attack_id_of, current_table, analysis_table, label_votes,
                             fingerprint, read_steps, STEPS)
from semsim.sweep import sweep
from semsim.report import REPORT_STEP

UNCHANGED = 'done earlier (inputs unchanged)'

TINY = dict(n_originals=10, victims=[dict(arch='lenet', epochs=0), dict(arch='lenet', epochs=0, seed=1),
                                     dict(arch='convnet', width=8, epochs=0)],
            attacks=[dict(attack='ig', iterations=60)], attack_batch=10,
            metrics=dict(names=['psnr', 'mse', 'ssim', 'lpips'], preset='paper'),
            labels=dict(source='proxy:panel', panel=3, threshold=0.5),
            semsim=dict(arch='convnet', epochs=2, sampler='paper'),
            analysis=dict(bootstrap=200))

def test_report_cli_writes_html_offline(tmp_path):
    cfg = tmp_path/'tiny.yaml'; cfg.write_text(yaml.safe_dump({**TINY, 'name': 'tiny'}))
    p = semsim_cli('report', '--config', cfg, '--runs', tmp_path/'runs', '-p', 'semsim.epochs', '2')
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    run = RunDir(tmp_path/'runs'/'tiny')
    assert f'report: {run.report_html.resolve()}' in p.stdout
    html = run.report_html.read_text()
    for must in ('Which metric tells', 'These labels are proxies, not people', 'noise ceiling',
                 'SemSim on held-out originals', 'Label provenance', 'Experiment config as resolved', 'lpips'):
        assert must in html, must
    assert 'semsim weights' in html                                  # LPIPS has no weights offline: said, with the fix
    assert 'recomputed because it never ran in this run' in html     # the appendix says what each step did
    corr = pd.read_csv(run.analysis_dir/'correlations.csv')
    assert set(corr.level) == {'model', 'image'} and {'psnr', 'semsim'} <= set(corr.metric)
    table, _ = read_table(run.reconstructions)
    assert len(table) == 30 and table.recon_id.is_unique and table.semsim.notna().all()
    # a second call with nothing changed recomputes nothing, and says so for every step (the report included)
    html_time = run.report_html.stat().st_mtime_ns
    t0 = time.time(); q = semsim_cli('report', '--config', cfg, '--runs', tmp_path/'runs', '-p', 'semsim.epochs', '2')
    assert q.returncode == 0, q.stderr[-2000:]
    for step in ('originals', 'victims', 'attacks', 'metrics', 'labels', 'semsim', 'analysis', 'report'):
        assert f'[semsim] {step}: {UNCHANGED}' in q.stdout, (step, q.stdout[-2000:])
    assert 'recomputed' not in q.stdout and run.report_html.stat().st_mtime_ns == html_time
    assert time.time() - t0 < 60
    assert read_table(run.reconstructions)[0].attack_loss.tolist() == table.attack_loss.tolist()
    # the run's own resolved config.yaml (with its package versions) is accepted back: the same experiment
    assert 'versions' in yaml.safe_load(run.config.read_text())
    r = semsim_cli('report', '--config', run.config, '--runs', tmp_path/'runs')
    assert r.returncode == 0 and r.stdout.count(UNCHANGED) == 8, r.stdout[-2000:] + r.stderr[-2000:]
    s = semsim_cli('sweep', run.config, '--runs', tmp_path/'runs', '--check')
    assert s.returncode == 0 and 'config ok: tiny' in s.stdout, s.stderr[-2000:]

def test_report_cli_refuses_bad_config(tmp_path):
    cfg = tmp_path/'bad.yaml'; cfg.write_text('n_originals: 10\nattaks: []\n')
    p = semsim_cli('report', '--config', cfg, '--runs', tmp_path/'runs')
    assert p.returncode == 2 and "unknown config key 'attaks'" in p.stderr and str(cfg) in p.stderr

@pytest.mark.parametrize('text, key', [
    ('attacks: [{attack: ig, iterations: lots}]', 'attacks[0].iterations'),
    ('attacks: [{attack: ig}, {attack: igg}]', 'attacks[1].attack'),
    ('metrics: {names: [psnr, dreamsimm]}', 'metrics.names'),
    ('victims: [{arch: vgg}]', 'victims[0]'),
    ('victims: [{arch: lenet, epochs: -1}]', 'victims[0].epochs'),
    ('labels: {source: import:csv:/no/such.csv}', 'labels.source'),
    ('labels: {threshold: 2}', 'labels.threshold'),
    ('semsim: {epochs: 0}', 'semsim.epochs'),
    ('n_originals: 2.5', 'n_originals'),
])
def test_whole_config_validated_before_any_work(tmp_path, text, key):
    cfg = tmp_path/'bad.yaml'; cfg.write_text(f'dataset: digits\n{text}\n')
    for check in ([], ['--check']):
        rc, _, err = semsim_cli('report', '--config', cfg, '--runs', tmp_path/'runs', *check)
        assert rc == 2 and f'[{key}]' in err and 'fix:' in err, err[-2000:]
        assert len(err.strip().splitlines()) == 1 and 'Traceback' not in err
    assert not (tmp_path/'runs').exists()                           # nothing was written: no step ran

def test_bad_config_one_line_from_the_console_script(tmp_path):
    "The installed console script itself (the other tests run `semsim.cli.main` in-process): --help, one real command."
    h = console_script('--help')
    assert h.returncode == 0 and 'report' in h.stdout and 'sweep' in h.stdout, h.stderr[-2000:]
    cfg = tmp_path/'bad.yaml'; cfg.write_text('dataset: digits\nattacks: [{attack: ig, iterations: lots}]\n')
    p = console_script('report', '--config', cfg, '--runs', tmp_path/'runs')
    assert p.returncode == 2 and p.stderr.strip().count('\n') == 0 and 'Traceback' not in p.stderr
    assert "attacks[0].iterations must be an integer" in p.stderr and "lots" in p.stderr and 'fix:' in p.stderr
    assert not (tmp_path/'runs').exists()

def test_examples_pass_check_and_help_points_at_them(tmp_path):
    examples = sorted((ROOT/'examples').glob('*.yaml'))
    assert {e.stem for e in examples} >= {'fashion_mnist', 'digits', 'lfw_faces', 'cifar100'}
    for e in examples:
        assert e.read_text().count('#') >= 5                          # commented
        rc, out, err = semsim_cli('report', '--config', e, '--check', '--runs', tmp_path/'runs')
        assert rc == 0 and out.startswith('config ok:'), (e, err[-2000:])
        rc, out, err = semsim_cli('sweep', e, '--check', '--runs', tmp_path/'runs')
        assert rc == 0 and out.startswith('config ok:'), (e, err[-2000:])
    assert not (tmp_path/'runs').exists()                           # --check does no work
    assert 'data/downloads' in (ROOT/'examples'/'cifar100.yaml').read_text()   # how to get the data offline
    for cmd in ('report', 'sweep'):
        rc, out, _ = semsim_cli(cmd, '--help')
        assert rc == 0 and 'examples/' in out and '--check' in out

def _digits(name, iterations):
    return load_config(dataset='digits', params=[
        ('name', name), ('n_originals', '8'), ('attack_batch', '8'),
        ('victims', '[{arch: lenet, epochs: 0, seed: [0, 1, 2]}]'),
        ('attacks', f'[{{attack: ig, iterations: {iterations}}}]'), ('metrics.names', '[psnr, mse]'),
        ('labels.source', 'humans'), ('semsim.epochs', '1'), ('analysis.bootstrap', '50')])

def _label(run, cfg, tmp_path):
    "Attack and measure, then two people label every current reconstruction (of each original, some recognised)."
    from semsim.labels import open_labels
    run_pipeline(cfg, tmp_path, verbose=False, steps=STEPS[:4])
    cur, _ = current_table(run)
    order = {i: k for k, i in enumerate(sorted(cur.image_id.unique()))}
    victim = {m: k for k, m in enumerate(sorted(cur.model_id.unique()))}
    with open_labels(run) as st:
        recognised = lambda r: (order[r.image_id] + victim[r.model_id]) % 2
        st.add_many(pd.DataFrame([dict(recon_id=r.recon_id, annotator=a,
                                       answer=int(r.class_id) if recognised(r) else 'cannot')
                                  for r in cur.itertuples() for a in ('alice', 'bob')]))
    return cur

def test_rerun_with_new_iterations_never_reports_old_reconstructions(tmp_path):
    run = RunDir(tmp_path/'it')
    _label(run, _digits('it', 5), tmp_path); run_pipeline(_digits('it', 5), tmp_path, verbose=False)
    old = attack_id_of(_digits('it', 5)['attacks'][0])
    _label(run, _digits('it', 8), tmp_path); run_pipeline(_digits('it', 8), tmp_path, verbose=False)
    new = attack_id_of(_digits('it', 8)['attacks'][0])
    assert old != new and old.startswith('ig-') and new.startswith('ig-')
    table, meta = read_table(run.reconstructions)
    assert set(table.attack_id) == {old, new} and len(table) == 48      # the old results are kept next to the new
    ok = table[table.status == 'ok']
    assert len(ok) and (ok.iterations == ok.attack_id.map(lambda a: meta['attacks'][a]['iterations'])).all()
    assert {meta['attacks'][old]['iterations'], meta['attacks'][new]['iterations']} == {5, 8}
    cur, _ = current_table(run)
    assert set(cur.attack_id) == {new} and len(cur) == 24
    assert set(analysis_table(run).attack_id) == {new}                   # what the report reads
    corr = pd.read_csv(run.analysis_dir/'correlations.csv')
    assert (corr[corr.level == 'image'].n <= 24).all()                  # the analysis saw only the current rows
    outcome = json.loads((run.path/'pipeline.json').read_text())['outcome']
    assert outcome['semsim'].startswith('recomputed because its inputs changed: votes')
    assert outcome['victims'] == UNCHANGED and outcome['originals'] == UNCHANGED
    steps = read_steps(run)
    assert steps['attacks']['inputs']['attacks'][new]['iterations'] == 8
    # back to 5 iterations: those reconstructions exist, so nothing is attacked again
    losses = table.set_index('recon_id').attack_loss
    run_pipeline(_digits('it', 5), tmp_path, verbose=False)
    assert json.loads((run.path/'pipeline.json').read_text())['outcome']['attacks'].startswith('recomputed because')
    again, _ = read_table(run.reconstructions)
    assert len(again) == 48 and again.set_index('recon_id').attack_loss.equals(losses)
    assert set(analysis_table(run).attack_id) == {old}

def test_changed_labels_retrain_semsim(tmp_path):
    cfg, run = _digits('lab', 5), RunDir(tmp_path/'lab')
    cur = _label(run, cfg, tmp_path)
    run_pipeline(cfg, tmp_path, verbose=False)
    first = read_steps(run)['semsim']['key']
    run_pipeline(cfg, tmp_path, verbose=False)
    out = json.loads((run.path/'pipeline.json').read_text())['outcome']
    assert set(out.values()) == {UNCHANGED}                              # nothing changed: nothing recomputed
    from semsim.labels import open_labels
    with open_labels(run) as st:   # bob changes his mind on one reconstruction
        was = st.current(annotator='bob').set_index('recon_id').recognized[cur.recon_id[0]]
        st.add(cur.recon_id[0], 'bob', 'cannot' if was else int(cur.class_id[0]))
    run_pipeline(cfg, tmp_path, verbose=False)
    out = json.loads((run.path/'pipeline.json').read_text())['outcome']
    assert out['labels'] == UNCHANGED and out['semsim'] == 'recomputed because its inputs changed: votes'
    assert out['analysis'].startswith('recomputed because its inputs changed: votes')
    assert out['attacks'] == UNCHANGED and out['metrics'] == UNCHANGED
    key = read_steps(run)['semsim']['key']
    assert key != first
    v = label_votes(cfg, run, read_steps(run)['current'])
    folder = next(p for p in (run.path/'semsim').iterdir() if p.name.endswith(key[:6]))
    meta = json.loads((folder/'model.json').read_text())
    assert meta['label_source']['votes_fingerprint'] == fingerprint(v) and meta['label_source']['kind'] == 'humans'
    assert len(list((run.path/'semsim').iterdir())) == 2               # one SemSim per votes key, side by side
    # another metric preset recomputes only the metric it changes (mse has one setting), and what reads it
    mse = read_table(run.reconstructions)[0].set_index('recon_id').mse
    run_pipeline({**cfg, 'metrics': {**cfg['metrics'], 'preset': 'standard'}}, tmp_path, verbose=False)
    out = json.loads((run.path/'pipeline.json').read_text())['outcome']
    assert out['metrics'] == 'recomputed because its inputs changed: psnr' and out['semsim'] == UNCHANGED
    assert out['analysis'].startswith('recomputed because its inputs changed: table')
    table = read_table(run.reconstructions)[0].set_index('recon_id')
    assert table.psnr_standard.notna().any() and table.mse.equals(mse)

def test_auto_switches_from_proxies_to_humans_and_retrains(tmp_path):
    tiny = {**TINY, 'name': 'auto', 'n_originals': 8}
    cfg = load_config(dataset='fashion_mnist', params=[(k, yaml.safe_dump(v)) for k, v in tiny.items()
                                                       if k not in ('labels', 'metrics')]
                      + [('metrics.names', '[psnr, mse]'), ('labels.source', 'auto'), ('labels.panel', '3')])
    run = run_pipeline(cfg, tmp_path, verbose=False)
    steps = read_steps(run)
    first = next(p for p in (run.path/'semsim').iterdir() if p.name.endswith(steps['semsim']['key'][:6]))
    assert json.loads((first/'model.json').read_text())['label_source']['kind'] == 'proxy:panel'
    from semsim.labels import open_labels
    cur, _ = current_table(run)
    part = cur[cur.model_id.isin(sorted(cur.model_id.unique())[:2])].reset_index(drop=True)   # 2 of 3 victims
    with open_labels(run) as st:
        order, victim = {i: k for k, i in enumerate(sorted(part.image_id.unique()))}, sorted(part.model_id.unique())
        st.add_many(pd.DataFrame([dict(recon_id=r.recon_id, annotator='carol',   # of each original one recognised
                                       answer=int(r.class_id) if (order[r.image_id] + victim.index(r.model_id)) % 2
                                       else 'cannot') for r in part.itertuples()]))
    run_pipeline(cfg, tmp_path, verbose=False)       # auto: 16 of 24 labelled by a person is below the threshold
    said = json.loads((run.analysis_dir/'analysis.json').read_text())['label_source']
    assert said['kind'] == 'proxy:panel'
    assert f'humans: {len(part)} of 24 reconstructions (below the threshold)' in said['note']
    sub = load_config(dataset='fashion_mnist', params=[(k, yaml.safe_dump(v)) for k, v in cfg.items()
                                                       if k not in ('versions', 'analysis')]
                      + [('analysis.subset', 'labelled'), ('analysis.bootstrap', '50')])
    run_pipeline(sub, tmp_path, verbose=False)       # ... unless the analysis keeps to what people labelled
    said = json.loads((run.analysis_dir/'analysis.json').read_text())['label_source']
    assert said['kind'] == 'humans' and said['annotators'] == ['carol']
    corr = pd.read_csv(run.analysis_dir/'correlations.csv')
    assert set(corr[corr.level == 'image'].n) == {len(part)}
    _label(run, cfg, tmp_path)                       # alice and bob label every current reconstruction
    run_pipeline(cfg, tmp_path, verbose=False)
    out = json.loads((run.path/'pipeline.json').read_text())['outcome']
    assert out['semsim'].startswith('recomputed because its inputs changed: votes'), out
    key = read_steps(run)['semsim']['key']
    meta = json.loads(next(p for p in (run.path/'semsim').iterdir() if p.name.endswith(key[:6]))
                      .joinpath('model.json').read_text())['label_source']
    assert meta['kind'] == 'humans' and meta['requested'] == 'auto' and meta['annotators'] == ['alice', 'bob', 'carol']
    assert meta['votes_fingerprint'] == fingerprint(label_votes(cfg, run, read_steps(run)['current']))
    said = json.loads((run.analysis_dir/'analysis.json').read_text())['label_source']
    assert said['kind'] == 'humans' and said['annotators'] == ['alice', 'bob', 'carol']
    ceiling = pd.read_csv(run.analysis_dir/'noise_ceiling.csv')
    assert set(ceiling.annotators) == {3}                                 # the three people, no proxy among them

def test_import_csv_label_source_end_to_end(tmp_path):
    cfg, run = _digits('imp', 5), RunDir(tmp_path/'imp')
    run_pipeline(cfg, tmp_path, verbose=False, steps=STEPS[:4])
    cur, _ = current_table(run)
    victim = {m: k for k, m in enumerate(sorted(cur.model_id.unique()))}
    csv = tmp_path/'labels.csv'
    recognised = lambda k, r: (k + victim[r.model_id]) % 2
    pd.DataFrame([dict(recon_id=r.recon_id, annotator=a, answer=int(r.class_id) if recognised(k, r) else 'cannot')
                  for k, r in enumerate(cur.itertuples()) for a in ('carol', 'dan')]).to_csv(csv, index=False)
    cfg = load_config(dataset='digits', params=[(k, yaml.safe_dump(v)) for k, v in cfg.items() if k != 'labels']
                      + [('labels.source', f'import:csv:{csv}')])
    run_pipeline(cfg, tmp_path, verbose=False)
    v = label_votes(cfg, run, read_steps(run)['current'])
    assert len(v) == len(cur) and (v.votes_total == 2).all()
    key = read_steps(run)['semsim']['key']
    folder = next(p for p in (run.path/'semsim').iterdir() if p.name.endswith(key[:6]))
    meta = json.loads((folder/'model.json').read_text())
    assert meta['label_source']['kind'] == f'import:csv:{csv}'
    assert meta['label_source']['votes_fingerprint'] == fingerprint(v)
    assert (run.analysis_dir/'correlations.csv').exists()

def test_import_semsim_release_label_source_end_to_end(tmp_path):
    "The paper's released annotations as the experiment: imported, measured, SemSim trained, analysed, reported."
    from semsim.labelio import release_fixture
    from semsim.votes import label_source
    expected = release_fixture(tmp_path/'release', n_images=12, seed=3)           # 12 originals x 2 models
    cfg = load_config(dataset='fashion_mnist', params=[
        ('name', 'rel'), ('labels.source', f'import:semsim-release:{tmp_path/"release"}'),
        ('metrics.names', '[psnr, mse, ssim]'), ('semsim.epochs', '2'), ('analysis.bootstrap', '100')])
    run = run_pipeline(cfg, tmp_path, verbose=False, steps=STEPS + [REPORT_STEP])
    out = json.loads((run.path/'pipeline.json').read_text())['outcome']
    assert all(o.startswith('recomputed because') for o in out.values()), out
    assert not run.victims_dir.exists() or not any(run.victims_dir.iterdir())     # nothing trained ...
    cur, _ = current_table(run)
    assert len(cur) == 24 and set(cur.attack_id) == {'released'} and cur.psnr.notna().all()   # ... nothing attacked
    v = label_votes(cfg, run, read_steps(run)['current'])
    assert len(v) == 24 and (v.votes_total == 5).all()
    src = label_source(run, cfg['labels']['source'])
    assert src['annotators'] == [f'release:{j}' for j in range(5)]
    key = read_steps(run)['semsim']['key']
    folder = next(p for p in (run.path/'semsim').iterdir() if p.name.endswith(key[:6]))
    meta = json.loads((folder/'model.json').read_text())
    assert meta['label_source']['kind'] == cfg['labels']['source']
    assert meta['label_source']['votes_fingerprint'] == fingerprint(v)
    corr = pd.read_csv(run.analysis_dir/'correlations.csv')
    assert set(corr.level) == {'image'} and set(corr.n) == {24}        # two models: no model level, said
    said = json.loads((run.analysis_dir/'analysis.json').read_text())['label_source']
    assert said['kind'] == cfg['labels']['source'] and said['annotators'] == src['annotators']
    html = run.report_html.read_text()
    assert 'release:0' in html and 'SemSim on held-out originals' in html
    again = run_pipeline(cfg, tmp_path, verbose=False, steps=STEPS + [REPORT_STEP])     # a rerun recomputes nothing
    assert set(json.loads((again.path/'pipeline.json').read_text())['outcome'].values()) == {UNCHANGED}


def test_sweep_survives_a_killed_worker(tmp_path):
    from dask.distributed import Client, LocalCluster
    cfg = load_config(dataset='fashion_mnist', params=[
        ('name', 'sw'), ('n_originals', '8'), ('victims', '[{arch: lenet, epochs: 0}]'),
        ('attacks', '[{attack: ig, iterations: 40}]'), ('attack_batch', '2'), ('metrics.names', '[psnr, mse]')])
    run = RunDir(tmp_path/'sw')
    outcome = {}
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        pids = list(client.run(os.getpid).values())
        def go():
            try: outcome['status'] = sweep(cfg, cluster.scheduler_address, runs_dir=tmp_path, verbose=False)
            except Exception as e: outcome['error'] = e
        th = threading.Thread(target=go); th.start()
        deadline = time.time() + 240
        while time.time() < deadline and not list((run.path/'tasks').glob('*.json')): time.sleep(0.2)
        assert list((run.path/'tasks').glob('*.json')), 'no sweep task finished in time'
        os.kill(pids[0], signal.SIGKILL)                       # a worker dies mid-sweep
        th.join(400)
    missing_before = 4 - len(list((run.path/'tasks').glob('*.json')))
    status = sweep(cfg, 'local', runs_dir=tmp_path, verbose=False)   # the rerun does only what is missing
    assert sum(v == 'computed' for v in status.values()) == missing_before
    assert len(status) == 4
    table, _ = read_table(run.reconstructions)
    assert len(table) == 8 and table.recon_id.is_unique             # every result exactly once
    assert table.psnr.notna().all() and (table.status == 'ok').all()
    assert all((run.path/p).exists() for p in table.recon_path)
    again = sweep(cfg, 'local', runs_dir=tmp_path, verbose=False)
    assert set(again.values()) == {'skipped'}
    # the run's own config.yaml drives the same sweep: everything finished, and said so truthfully
    p = console_script('sweep', run.config, '--runs', tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr[-2000:]
    assert 'sweep: 0 computed, 4 already finished (skipped)' in p.stdout
    # other iterations are other tasks: none of them counts as finished
    cfg2 = {**cfg, 'attacks': [{'attack': 'ig', 'iterations': 20}]}
    status = sweep(cfg2, 'local', runs_dir=tmp_path, verbose=False)
    assert set(status.values()) == {'computed'} and len(status) == 4
    table, meta = read_table(run.reconstructions)
    assert len(table) == 16 and set(meta['attacks']) == set(table.attack_id)
