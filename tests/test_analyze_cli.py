"`semsim analyze`: big tables in seconds, CSV and parquet input, and clear answers to bad input."
import argparse, json, time
import numpy as np, pandas as pd, pytest
import scipy.stats as stats
from sklearn.metrics import roc_auc_score
from semsim.core import SemsimError
from semsim.analysis import register_commands, synthetic_study, CORRELATION_COLUMNS, CI_METHODS, MODEL_CI
from conftest import semsim_cli


def analyze(*argv):
    "Run `semsim analyze ARGV` in-process through the parser `register_commands` builds."
    parser = argparse.ArgumentParser(prog='semsim')
    register_commands(parser.add_subparsers(dest='cmd', required=True))
    args = parser.parse_args(['analyze', *map(str, argv)])
    args.func(args)


@pytest.fixture(scope='module')
def study():
    return synthetic_study(n_models=8, n_images=40, seed=4)


def test_big_parquet_in_seconds(tmp_path, capsys):
    table = synthetic_study(n_models=25, n_images=420, seed=1)[0]  # 10,500 reconstructions
    table.to_parquet(tmp_path / 'reconstructions.parquet')
    t0 = time.perf_counter()
    analyze(tmp_path / 'reconstructions.parquet', '--out', tmp_path / 'analysis')
    elapsed = time.perf_counter() - t0
    assert elapsed < 30, f'analyze took {elapsed:.1f} s on {len(table)} rows'
    text = (tmp_path / 'analysis' / 'correlations.csv').read_text().splitlines()
    assert text[0] == ','.join(CORRELATION_COLUMNS)
    assert text[1].startswith('model,psnr,25,1,')
    res = pd.read_csv(tmp_path / 'analysis' / 'correlations.csv')
    assert res[res.level == 'model'][['auc', 'auc_lo', 'auc_hi']].isna().all().all()  # no AUC at model level
    assert res.ci_method.tolist() == [MODEL_CI] * 5 + [CI_METHODS['two-way']] * 5
    assert ((res.spearman_lo <= res.spearman) & (res.spearman <= res.spearman_hi)).all()
    assert res.level.tolist() == ['model'] * 5 + ['image'] * 5
    assert res.n.tolist() == [25] * 5 + [len(table)] * 5
    assert res.orientation.tolist() == [1, 1, -1, -1, -1] * 2
    img, rate = res[res.level == 'image'].set_index('metric'), table.votes_recognized / table.votes_total
    means = table.groupby('model_id')[['lpips', 'recognized']].mean()
    mod = res[res.level == 'model'].set_index('metric')
    assert mod.loc['lpips', 'spearman'] == pytest.approx(stats.spearmanr(means.lpips, means.recognized).statistic,
                                                         abs=1e-9)
    assert mod.loc['lpips', 'spearman_lo'] <= mod.loc['lpips', 'spearman'] <= mod.loc['lpips', 'spearman_hi']
    assert img.loc['psnr', 'kendall'] == pytest.approx(stats.kendalltau(table.psnr, rate).statistic, abs=1e-9)
    assert img.loc['semsim', 'auc'] == pytest.approx(roc_auc_score(table.recognized, -table.semsim), abs=1e-9)
    assert img.pearson.isna().all()
    for f in ('heatmap.png', 'model_scatter.png', 'scatter.html'):
        assert (tmp_path / 'analysis' / f).stat().st_size > 1000
    out = capsys.readouterr().out
    assert 'wrote' in out and CI_METHODS['two-way'] in out and MODEL_CI in out
    line = next(l for l in out.splitlines() if l.split()[:2] == ['image', 'semsim'])
    r = img.loc['semsim']
    assert f"{-r.spearman:.3f} [{-r.spearman_hi:.3f}, {-r.spearman_lo:.3f}]" in line
    assert f"{r.auc:.3f} [{r.auc_lo:.3f}" in line


def test_csv_model_column_metrics_and_level(tmp_path, study):
    table = study[0].rename(columns={'model_id': 'model'})
    table.to_csv(tmp_path / 't.csv', index=False)
    analyze(tmp_path / 't.csv', '--out', tmp_path / 'o', '--level', 'image', '--metrics', 'lpips,psnr', '--no-figures',
            '--resamples', '200')
    res = pd.read_csv(tmp_path / 'o' / 'correlations.csv')
    assert res.level.tolist() == ['image', 'image'] and res.metric.tolist() == ['lpips', 'psnr']
    assert sorted(p.name for p in (tmp_path / 'o').iterdir()) == ['analysis.json', 'correlations.csv']
    rate = table.votes_recognized / table.votes_total
    assert res.spearman[0] == pytest.approx(stats.spearmanr(table.lpips, rate).statistic, abs=1e-9)


def test_threshold_majority_from_votes(tmp_path, study):
    table = study[0].drop(columns=['recognized'])
    table.to_parquet(tmp_path / 't.parquet')
    analyze(tmp_path / 't.parquet', '--out', tmp_path / 'o', '--level', 'image', '--threshold', '0.7', '--no-figures')
    res = pd.read_csv(tmp_path / 'o' / 'correlations.csv').set_index('metric')
    rec = (table.votes_recognized / table.votes_total > 0.7).astype(int)
    assert res.loc['ssim', 'auc'] == pytest.approx(roc_auc_score(rec, table.ssim), abs=1e-9)


def test_noise_ceiling_from_labels(tmp_path, study):
    study[0].to_parquet(tmp_path / 't.parquet'); study[1].to_csv(tmp_path / 'labels.csv', index=False)
    analyze(tmp_path / 't.parquet', '--out', tmp_path / 'o', '--labels', tmp_path / 'labels.csv', '--no-figures')
    ceil = pd.read_csv(tmp_path / 'o' / 'noise_ceiling.csv').set_index('level')
    assert ceil.loc['image', 'n'] == len(study[0]) and 0 < ceil.loc['image', 'ceiling'] <= 1


def test_constant_column_is_nan_with_warning(tmp_path, study, capsys):
    table = study[0].assign(ssim=0.5)
    table.to_csv(tmp_path / 't.csv', index=False)
    analyze(tmp_path / 't.csv', '--out', tmp_path / 'o', '--no-figures')
    err = capsys.readouterr().err
    assert "warning: ssim: metric is constant, correlation undefined (NaN)" in err
    res = pd.read_csv(tmp_path / 'o' / 'correlations.csv').set_index(['level', 'metric'])
    assert np.isnan(res.loc[('model', 'ssim'), 'spearman']) and np.isnan(res.loc[('image', 'ssim'), 'kendall'])
    assert np.isnan(res.loc[('image', 'ssim'), 'auc'])
    assert 'warning: ssim: metric is constant, AUC undefined (NaN)' in err
    assert np.isfinite(res.loc[('image', 'psnr'), 'spearman'])


def test_constant_human_column_with_figures(tmp_path, study, capsys):
    table = study[0].drop(columns=['votes_recognized', 'votes_total']).assign(recognized=1)
    table.to_csv(tmp_path / 't.csv', index=False)
    analyze(tmp_path / 't.csv', '--out', tmp_path / 'o')
    err = capsys.readouterr().err
    assert 'human column is constant' in err and 'AUC undefined' in err
    assert pd.read_csv(tmp_path / 'o' / 'correlations.csv').spearman.isna().all()


def test_nan_rows_are_counted(tmp_path, study, capsys):
    table = study[0].copy()
    table.loc[:6, 'votes_total'] = np.nan
    table.loc[10:12, 'psnr'] = np.nan
    table.to_parquet(tmp_path / 't.parquet')
    analyze(tmp_path / 't.parquet', '--out', tmp_path / 'o', '--no-figures')
    err = capsys.readouterr().err
    assert f'7 of {len(table)} rows have no human judgement and were dropped' in err
    assert f"metric 'psnr': 3 of {len(table) - 7} rows are NaN" in err
    res = pd.read_csv(tmp_path / 'o' / 'correlations.csv').set_index(['level', 'metric'])
    assert res.loc[('image', 'psnr'), 'n'] == len(table) - 10 and res.loc[('image', 'ssim'), 'n'] == len(table) - 7


@pytest.mark.parametrize('change, message', [
    (lambda t: t.drop(columns=['recognized', 'votes_recognized', 'votes_total']), 'no human columns'),
    (lambda t: t.drop(columns=['model_id']), 'model_id'),
    (lambda t: t[t.model_id.isin(['victim0', 'victim1'])], 'at least 3 models'),
    (lambda t: t[[c for c in t.columns if c not in ('psnr', 'ssim', 'mse', 'lpips', 'semsim')]], 'no metric columns'),
])
def test_bad_tables_are_refused(tmp_path, study, change, message):
    change(study[0]).to_csv(tmp_path / 't.csv', index=False)
    with pytest.raises(SemsimError, match=message): analyze(tmp_path / 't.csv', '--out', tmp_path / 'o', '--no-figures')


def test_bad_arguments_and_files(tmp_path, study):
    study[0].to_csv(tmp_path / 't.csv', index=False)
    with pytest.raises(SemsimError, match="unknown metric column.*'sharpness'"):
        analyze(tmp_path / 't.csv', '--out', tmp_path / 'o', '--metrics', 'psnr,sharpness')
    with pytest.raises(SemsimError, match="'model_id' is not a metric"):
        analyze(tmp_path / 't.csv', '--out', tmp_path / 'o', '--metrics', 'model_id')
    with pytest.raises(SemsimError, match='table not found'): analyze(tmp_path / 'nope.csv', '--out', tmp_path / 'o')
    (tmp_path / 't.xlsx').write_bytes(b'x')
    with pytest.raises(SemsimError, match='unsupported table format'):
        analyze(tmp_path / 't.xlsx', '--out', tmp_path / 'o')
    (tmp_path / 'broken.parquet').write_bytes(b'not parquet')
    with pytest.raises(SemsimError, match='unreadable table'):
        analyze(tmp_path / 'broken.parquet', '--out', tmp_path / 'o')
    with pytest.raises(SystemExit): analyze(tmp_path / 't.csv', '--out', tmp_path / 'o', '--level', 'pixel')


def test_scatter_html_shows_thumbnail_on_hover_offline(tmp_path):
    "The standalone scatter.html works with the network cut off and shows the reconstruction on hover."
    import shutil
    sync_api = pytest.importorskip('playwright.sync_api')
    chromium = shutil.which('chromium') or shutil.which('chromium-browser')
    if not chromium: pytest.skip('no chromium on this machine')
    from semsim.core import save_png
    rows = []
    for k in range(6):
        save_png(np.full((1, 28, 28), k / 6), tmp_path / 'recon' / f'r{k}.png')
        rows.append(dict(model_id=f'm{k % 3}', image_id=f'i{k}', recon_id=f'm{k % 3}/ig/i{k}',
                         recon_path=f'recon/r{k}.png', psnr=10.0 + k, recognized=k % 2))
    pd.DataFrame(rows).to_csv(tmp_path / 't.csv', index=False)
    analyze(tmp_path / 't.csv', '--out', tmp_path / 'o', '--level', 'image')
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=['--no-sandbox'])
        page = browser.new_page()
        page.route('**/*', lambda r: r.continue_() if r.request.url.startswith(('file:', 'data:')) else r.abort())
        page.goto(f"file://{tmp_path / 'o' / 'scatter.html'}"); page.wait_for_selector('.nsewdrag')
        x, y = page.evaluate("""() => { const gd = document.querySelector('.plotly-graph-div'), t = gd._fullData[0];
            const r = gd.querySelector('.nsewdrag').getBoundingClientRect();
            return [r.left + gd._fullLayout.xaxis.c2p(t.x[2]), r.top + gd._fullLayout.yaxis.c2p(t.y[2])]; }""")
        page.mouse.move(x - 30, y - 30); page.mouse.move(x, y, steps=5)
        page.wait_for_function("() => [...document.querySelectorAll('img')].some(i => i.style.display === 'block')",
                               timeout=5000)
        shown = page.evaluate("""() => {
            const i = [...document.querySelectorAll('img')].find(i => i.style.display === 'block');
            return [i.src.slice(0, 22), i.naturalWidth]; }""")
        browser.close()
    assert shown == ['data:image/png;base64,', 28]


def test_set_level_metrics_stay_at_model_level(tmp_path, study):
    table = study[0].assign(feat_fid=lambda t: t.groupby('model_id').lpips.transform('mean') * 100)
    table.to_csv(tmp_path / 't.csv', index=False)
    analyze(tmp_path / 't.csv', '--out', tmp_path / 'o', '--no-figures', '--resamples', '200')
    res = pd.read_csv(tmp_path / 'o' / 'correlations.csv')
    assert res[res.metric == 'feat_fid'].level.tolist() == ['model']
    assert 'feat_fid' in pd.read_csv(tmp_path / 'o' / 'model_rates.csv').columns
    assert json.loads((tmp_path / 'o' / 'analysis.json').read_text())['set_level_metrics'] == ['feat_fid']


def test_few_models_give_rates_not_p_values(tmp_path, study, capsys):
    four = study[0][study[0].model_id.isin(['victim0', 'victim1', 'victim2', 'victim3'])]
    four.to_csv(tmp_path / 't.csv', index=False)
    analyze(tmp_path / 't.csv', '--out', tmp_path / 'o', '--no-figures', '--resamples', '200')
    res = pd.read_csv(tmp_path / 'o' / 'correlations.csv').set_index(['level', 'metric'])
    model = res.loc['model']
    assert model.spearman_p.isna().all() and model.spearman_lo.isna().all() and model.spearman.notna().all()
    assert (model.note == 'too few models for a correlation (n = 4): see the per-model rates').all()
    assert 'model level: too few models for a correlation (n = 4)' in capsys.readouterr().out
    rates = pd.read_csv(tmp_path / 'o' / 'model_rates.csv')
    assert len(rates) == 4 and (rates.human_rate_lo <= rates.human_rate).all()
    assert (rates.human_rate <= rates.human_rate_hi).all()
    assert rates.ci_method.unique().tolist() == [CI_METHODS['one-way']]


def test_undeclared_numeric_column_is_reported(tmp_path, study, capsys):
    study[0].assign(dreamsim=np.linspace(0, 1, len(study[0]))).to_csv(tmp_path / 't.csv', index=False)
    analyze(tmp_path / 't.csv', '--out', tmp_path / 'o', '--no-figures', '--resamples', '0')
    err = capsys.readouterr().err
    assert "dreamsim hold numbers but no declared orientation" in err and "Column(-1)" in err
    assert json.loads((tmp_path / 'o' / 'analysis.json').read_text())['undeclared_columns'] == ['dreamsim']
    assert 'dreamsim' not in pd.read_csv(tmp_path / 'o' / 'correlations.csv').metric.tolist()


@pytest.fixture(scope='module')
def bad_runs(tmp_path_factory, study):
    "Each bad table through `semsim analyze` (in-process, see `semsim_cli`): `{case: (path, result)}`."
    d, t = tmp_path_factory.mktemp('bad'), study[0]
    paths = {}
    psnr = t.astype({'psnr': object}); psnr.loc[17, 'psnr'] = 'abc'
    psnr.to_csv(paths.setdefault('psnr', d / 'psnr.csv'), index=False)
    rec = t.drop(columns=['votes_recognized', 'votes_total']).astype({'recognized': object})
    rec.loc[5, 'recognized'] = 'yes'
    rec.to_csv(paths.setdefault('yes', d / 'yes.csv'), index=False)
    for name in ('model_id', 'image_id'):
        t.drop(columns=[name, 'status']).to_parquet(paths.setdefault(name, d / f'no_{name}.parquet'))
    return {k: (v, semsim_cli('analyze', v, '--out', d / 'out' / k, '--no-figures')) for k, v in paths.items()}


def _one_clear_line(p):
    assert p.returncode == 2, (p.returncode, p.stdout[-2000:], p.stderr[-2000:])
    lines = [l for l in p.stderr.splitlines() if l.strip() and not l.startswith('warning:')]
    assert len(lines) == 1 and 'Traceback' not in p.stderr and 'fix:' in lines[0], p.stderr
    return lines[0]


def test_cli_non_numeric_metric_value_is_an_error(bad_runs):
    path, p = bad_runs['psnr']
    line = _one_clear_line(p)
    assert "column 'psnr' holds 'abc' in row 17" in line and str(path) in line and 'store a number' in line


def test_cli_bad_recognized_value_is_an_error(bad_runs, tmp_path, study):
    line = _one_clear_line(bad_runs['yes'][1])
    assert "'recognized' holds 'yes' in row 5" in line and 'store 1 (recognised) or 0' in line
    table = study[0].drop(columns=['votes_recognized', 'votes_total']); table.loc[5, 'recognized'] = 3
    table.to_csv(tmp_path / 't.csv', index=False)
    with pytest.raises(SemsimError, match='`recognized` must be 0 or 1; row 5 holds 3'):
        analyze(tmp_path / 't.csv', '--out', tmp_path / 'o', '--no-figures')


@pytest.mark.parametrize('case', ['model_id', 'image_id'])
def test_cli_parquet_missing_columns_is_an_error(bad_runs, case):
    path, p = bad_runs[case]
    line = _one_clear_line(p)
    assert f'no `{case}`' in line and str(path) in line
