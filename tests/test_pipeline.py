"""End to end: `semsim report` through papermill on a tiny experiment, and a Dask sweep that loses a worker mid-way
and completes on rerun with every result present exactly once."""
import json, os, signal, subprocess, sys, threading, time
from pathlib import Path
import pandas as pd, pytest, yaml
from semsim.core import RunDir, read_table
from semsim.pipeline import load_config, sweep

TINY = dict(n_originals=10, victims=[dict(arch='lenet', epochs=0), dict(arch='lenet', epochs=0, seed=1),
                                     dict(arch='convnet', width=8, epochs=0)],
            attacks=[dict(attack='ig', iterations=60)], attack_batch=10,
            metrics=dict(names=['psnr', 'mse', 'ssim', 'lpips'], preset='paper'),
            labels=dict(source='proxy:panel', panel=3, threshold=0.5), semsim=dict(arch='convnet', epochs=2, sampler='paper'),
            analysis=dict(bootstrap=200))

def semsim_cli(*args, cwd=None, timeout=600):
    "Run the installed `semsim` console script; returns the completed process."
    exe = Path(sys.executable).parent/'semsim'
    return subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=timeout)

def test_report_cli_writes_html_offline(tmp_path):
    cfg = tmp_path/'tiny.yaml'; cfg.write_text(yaml.safe_dump({**TINY, 'name': 'tiny'}))
    p = semsim_cli('report', '--config', cfg, '--runs', tmp_path/'runs', '-p', 'semsim.epochs', '2')
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    run = RunDir(tmp_path/'runs'/'tiny')
    assert f'report: {run.report_html.resolve()}' in p.stdout
    html = run.report_html.read_text()
    for must in ('Provenance', 'LABELS ARE PROXIES', 'Model level', 'Image level', 'Noise ceiling', 'held-out', 'lpips'):
        assert must in html, must
    assert 'unavailable' in html.lower() and 'semsim weights' in html      # LPIPS has no weights offline: said, with the fix
    corr = pd.read_csv(run.analysis_dir/'correlations.csv')
    assert set(corr.level) == {'model', 'image'} and {'psnr', 'semsim'} <= set(corr.metric)
    table, _ = read_table(run.reconstructions)
    assert len(table) == 30 and table.recon_id.is_unique and table.semsim.notna().all()
    # a second call resumes: nothing is attacked or trained again
    t0 = time.time(); q = semsim_cli('report', '--config', cfg, '--runs', tmp_path/'runs')
    assert q.returncode == 0, q.stderr[-2000:]
    assert read_table(run.reconstructions)[0].attack_loss.tolist() == table.attack_loss.tolist()

def test_report_cli_refuses_bad_config(tmp_path):
    cfg = tmp_path/'bad.yaml'; cfg.write_text('n_originals: 10\nattaks: []\n')
    p = semsim_cli('report', '--config', cfg, '--runs', tmp_path/'runs')
    assert p.returncode == 2 and "unknown config key 'attaks'" in p.stderr and str(cfg) in p.stderr

def test_sweep_survives_a_killed_worker(tmp_path):
    from dask.distributed import Client, LocalCluster
    cfg = load_config(dataset='fashion_mnist', params=[('name', 'sw'), ('n_originals', '8'), ('victims', '[{arch: lenet, epochs: 0}]'),
                                                       ('attacks', '[{attack: ig, iterations: 40}]'), ('attack_batch', '2'),
                                                       ('metrics.names', '[psnr, mse]')])
    run = RunDir(tmp_path/'sw')
    outcome = {}
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, Client(cluster) as client:
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
    assert sum(v == 'done' for v in status.values()) == missing_before
    assert len(status) == 4
    table, _ = read_table(run.reconstructions)
    assert len(table) == 8 and table.recon_id.is_unique             # every result exactly once
    assert table.psnr.notna().all() and (table.status == 'ok').all()
    assert all((run.path/p).exists() for p in table.recon_path)
    again = sweep(cfg, 'local', runs_dir=tmp_path, verbose=False)
    assert set(again.values()) == {'skipped'}
