"""Bad input to the core, data and labels commands, as a careless or hostile user gives it.

Every case runs the `semsim` command (in this process, as the console script would: `conftest.semsim_cli`) and
asserts: exit code 2, one line on stderr that names the file or argument and says how to fix it, no traceback,
nothing written outside the run directory (the run's parent folder is listed before and after) and the label store
unchanged (its row count before and after).
Read-only runs and a full disk are real: a tmpfs is mounted, filled or remounted read-only (this needs root, as in
the project's test sandbox; without it those tests are reported as skipped, not passed)."""
import gc, os, shutil, sqlite3, subprocess
from pathlib import Path
import numpy as np, pandas as pd, pytest
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio
from conftest import make_degraded_run, ROOT, semsim_cli
from semsim.core import RunDir, SemsimError, load_png, save_png, write_table, to_uint8
from semsim.labels import LabelStore, Labeller, open_labels
from semsim.votes import label_source, agreement, votes
from semsim.proxies import label_with_proxies
from semsim.labelio import release_fixture

def cli(*args):
    "`semsim ARGS` in-process, from the repository root (see `semsim_cli`); `.returncode`, `.stdout`, `.stderr`."
    return semsim_cli(*args, cwd=ROOT)

def n_labels(run) -> int|None:
    db = RunDir(run).labels_db
    if not db.exists(): return None
    for opts in ('mode=ro', 'mode=ro&immutable=1'):          # immutable: a read-only mount without a WAL index
        con = sqlite3.connect(f'file:{db}?{opts}', uri=True)
        try: return con.execute('SELECT COUNT(*) FROM labels').fetchone()[0]
        except sqlite3.OperationalError: continue
        finally: con.close()

def snapshot(run) -> tuple:
    "What the run's parent folder holds (outside the run itself) and how many labels the run has."
    run = RunDir(run); parent = run.path.parent
    outside = sorted(str(p.relative_to(parent)) for p in parent.rglob('*') if run.path not in (p, *p.parents))
    return outside, n_labels(run)

def assert_clear_error(p, *names):
    "Exit 2, one line naming each of `names`, with a fix, and no traceback."
    assert 'Traceback' not in p.stderr + p.stdout, p.stderr[-3000:]
    assert p.returncode == 2, (p.returncode, p.stderr[-2000:])
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith('semsim: error: ') and ' -- fix: ' in lines[0], lines[0]
    for n in names: assert str(n) in lines[0], (n, lines[0])
    return lines[0]

@pytest.fixture(scope='module')
def base(tmp_path_factory):
    "A run of 8 Fashion-MNIST originals x 2 'victims' with one human's labels on 4 reconstructions."
    run = make_degraded_run(tmp_path_factory.mktemp('base')/'runs'/'r')
    with open_labels(run) as st:
        ids = sorted(st.truth)[:4]
        for i in ids: st.add(i, 'alice', st.truth[i])
    return run

@pytest.fixture
def run(base, tmp_path):
    "A fresh copy of the base run, at tmp/runs/r, with an empty tmp/inputs for the bad files."
    (tmp_path/'inputs').mkdir()
    shutil.copytree(base.path, tmp_path/'runs'/'r')
    return RunDir(tmp_path/'runs'/'r')

def check_case(run, args, *names):
    before = snapshot(run)
    line = assert_clear_error(cli(*args), *names)
    assert snapshot(run) == before
    return line

# ---- path traversal: ids that would become paths outside the run -------------------------------------------------

def test_semsim_train_import_with_dotdot_names_writes_nothing_outside(run):
    src = run.path.parent.parent/'inputs'/'train_with_ori'/'5'
    x = load_png(run.path/'originals'/sorted(os.listdir(run.path/'originals'))[0])
    save_png(x, src/'5_3_ori.png'); save_png(x, src/'..--.._rec.png')
    line = check_case(run, ['labels', 'import', '--format', 'semsim-train', src.parent.parent, '--run', run.path,
                            '--dataset', 'fashion_mnist'], '..--.._rec.png')
    assert 'id' in line
    assert not (run.path.parent/'fashion_mnist_release_00005.png').exists()

def test_release_import_with_dot_model_folder_is_refused(run):
    src = run.path.parent.parent/'inputs'/'rel'
    release_fixture(src, n_images=1)
    (src/'img'/'ResNet20-4_clean').rename(src/'img'/'...')
    check_case(run, ['labels', 'import', '--format', 'semsim-release', src, '--run', run.path,
                     '--dataset', 'fashion_mnist'], '...')

def test_csv_import_with_traversal_id_is_refused(run):
    f = run.path.parent.parent/'inputs'/'l.csv'
    f.write_text('recon_id,annotator,answer\n../../etc/passwd,zoe,1\n')
    check_case(run, ['labels', 'import', '--format', 'csv', f, '--run', run.path], 'l.csv:2', 'not in the run')

def test_table_paths_outside_the_run_are_refused(run):
    t = pd.read_parquet(run.reconstructions)
    t.loc[0, 'recon_path'] = '../../../etc/hostname'
    write_table(run.reconstructions, t)
    with pytest.raises(SemsimError, match='outside the run'):
        lab = Labeller(run, 'mallory', order=[t.recon_id[0]]); lab.image()

# ---- images: 16-bit and other modes ---------------------------------------------------------------------------

def test_16bit_png_and_its_8bit_copy_agree_within_40db(tmp_path):
    ramp = np.tile(np.linspace(0, 65535, 64).round().astype(np.uint16), (32, 1))
    Image.fromarray(ramp).save(tmp_path/'r16.png')
    assert Image.open(tmp_path/'r16.png').mode.startswith('I')
    Image.fromarray(np.round(ramp / 257).astype(np.uint8)).save(tmp_path/'r8.png')
    a, b = to_uint8(load_png(tmp_path/'r16.png')), to_uint8(load_png(tmp_path/'r8.png'))
    assert len(np.unique(a)) == 64
    assert a.shape == b.shape and (np.array_equal(a, b) or peak_signal_noise_ratio(b, a, data_range=255) >= 40)
    rgba = np.dstack([np.full((8, 8, 3), 200, np.uint8), np.full((8, 8), 255, np.uint8)])
    Image.fromarray(rgba, 'RGBA').save(tmp_path/'rgba.png')                   # opaque: identical to its RGB
    assert (to_uint8(load_png(tmp_path/'rgba.png')) == 200).all()
    Image.fromarray(np.zeros((4, 4), np.float32)).save(tmp_path/'f.tif')
    with pytest.raises(SemsimError, match='f.tif'): load_png(tmp_path/'f.tif')

# ---- answers files and label files ----------------------------------------------------------------------------

def _release_with_gt(run, text: bytes):
    src = run.path.parent.parent/'inputs'/'rel'
    release_fixture(src, n_images=1)
    gt = sorted((src/'img').glob('*/*_gt.txt'))[0]
    gt.write_bytes(text)
    return src, gt

def test_gt_answer_outside_the_classes_is_refused(run):
    src, gt = _release_with_gt(run, b'1\n2\n99\n3\n4\n')
    line = check_case(run, ['labels', 'import', '--format', 'semsim-release', src, '--run', run.path,
                            '--dataset', 'fashion_mnist'], f'{gt}:3', "'99'")
    assert '0..9' in line

def test_binary_gt_file_is_refused(run):
    src, gt = _release_with_gt(run, bytes(range(256)) * 4)
    check_case(run, ['labels', 'import', '--format', 'semsim-release', src, '--run', run.path,
                     '--dataset', 'fashion_mnist'], gt, 'not a text file')

def test_binary_csv_labels_file_is_refused(run):
    f = run.path.parent.parent/'inputs'/'labels.csv'
    f.write_bytes(b'\x89PNG\r\n\x1a\n' + bytes(range(256)) * 8)
    check_case(run, ['labels', 'import', '--format', 'csv', f, '--run', run.path], f)

# ---- commands given impossible arguments ------------------------------------------------------------------------

def test_proxies_with_panel_zero(run):
    check_case(run, ['labels', 'proxies', '--run', run.path, '--panel', 0], '--panel')

def test_table_missing_columns_is_named(run):
    t = pd.read_parquet(run.reconstructions)
    write_table(run.reconstructions, t.drop(columns=['status', 'recon_path']))
    check_case(run, ['labels', 'proxies', '--run', run.path, '--panel', 1], run.reconstructions, 'status')

def test_labels_export_out_is_a_folder(run):
    (run.path.parent.parent/'inputs'/'adir').mkdir()
    check_case(run, ['labels', 'export', '--run', run.path, '--out', run.path.parent.parent/'inputs'/'adir'], 'adir')

def test_data_export_out_is_a_file(run):
    f = run.path.parent.parent/'inputs'/'afile'
    f.write_text('x')
    check_case(run, ['data', 'export', '--dataset', 'digits', '--n', 3, '--out', f], '--out', 'afile')
    check_case(run, ['data', 'export', '--dataset', 'digits', '--n', 3, '--out', f/'sub'], '--out', 'afile')
    assert f.read_text() == 'x'

# ---- failed reconstructions are never queued --------------------------------------------------------------------

def test_failed_reconstructions_are_kept_out_of_queues(run):
    t = pd.read_parquet(run.reconstructions)
    t.loc[0, ['status', 'recon_path']] = ['failed', '']
    t.loc[1, ['status', 'recon_path']] = ['diverged', None]
    t['psnr'], t['mse'] = np.arange(len(t), dtype=float), np.arange(len(t), dtype=float) % 5
    write_table(run.reconstructions, t)
    lab = Labeller(run, 'bob')
    assert set(lab.order) == set(t.recon_id[2:])
    with pytest.raises(SemsimError, match='failed reconstructions'): Labeller(run, 'bob', order=[t.recon_id[0]])
    from semsim.votes import active_order
    assert not {t.recon_id[0], t.recon_id[1]} & set(active_order(run).recon_id)
    assert label_source(run, 'humans')['n_total'] == len(t) - 2

# ---- read-only runs and a full disk (real mounts) ---------------------------------------------------------------

@pytest.fixture
def mount(tmp_path):
    "A 3 MB tmpfs at tmp/mnt (root only); unmounted afterwards."
    m = tmp_path/'mnt'; m.mkdir()
    r = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=3m', 'tmpfs', str(m)], capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f'cannot mount a tmpfs here ({r.stderr.strip()}); read-only and full-disk cases need root')
    yield m
    subprocess.run(['umount', '-l', str(m)], capture_output=True)

def _labelled_copy(base, dest) -> RunDir:
    shutil.copytree(base.path, dest, ignore=shutil.ignore_patterns('*.lock'))
    return RunDir(dest)

def test_read_only_mount_reads_and_refuses_writes(base, mount, tmp_path):
    run = _labelled_copy(base, mount/'r')
    want = votes(run, source='humans')
    gc.collect(); subprocess.run(['mount', '-o', 'remount,ro', str(mount)], check=True)
    assert not os.access(run.path, os.W_OK)
    st = open_labels(run)
    assert st.read_only and 'read-only' in st.why_read_only
    pd.testing.assert_frame_equal(votes(run, source='humans'), want)
    assert label_source(run, 'humans')['annotators'] == ['alice']
    with pytest.raises(SemsimError, match='read-only') as e: st.add(want.recon_id[0], 'bob', 1)
    assert 'move the file aside' not in str(e.value)
    p = cli('labels', 'export', '--run', run.path, '--out', tmp_path/'votes.csv', '--source', 'humans')
    assert p.returncode == 0, p.stderr[-2000:]
    assert len(pd.read_csv(tmp_path/'votes.csv')) == len(want)
    f = tmp_path/'more.csv'; f.write_text(f'recon_id,annotator,answer\n{want.recon_id[0]},bob,1\n')
    line = assert_clear_error(cli('labels', 'import', '--format', 'csv', f, '--run', run.path),
                              'read-only', run.labels_db)
    assert 'move the file aside' not in line
    assert n_labels(run) == 4

def test_read_only_store_of_a_run_without_labels_reads_empty(base, mount):
    run = RunDir(mount/'r')
    shutil.copytree(base.path, run.path, ignore=shutil.ignore_patterns('labels.sqlite*', '*.lock'))
    gc.collect(); subprocess.run(['mount', '-o', 'remount,ro', str(mount)], check=True)
    assert len(votes(run)) == 0 and label_source(run)['kind'] == 'none'
    assert not run.labels_db.exists()

def test_full_disk_says_no_space_and_keeps_the_labels(base, mount, tmp_path):
    run = _labelled_copy(base, mount/'r')
    want = votes(run, source='humans')
    with open(mount/'filler', 'wb') as f:                     # fill the disk
        try:
            while True: f.write(b'\0' * 65536); f.flush()
        except OSError: pass
    gc.collect()
    pd.testing.assert_frame_equal(votes(run, source='humans'), want)     # reading still works
    with pytest.raises(SemsimError, match='no space'): open_labels(run).add(want.recon_id[0], 'bob', 1)
    rows = '\n'.join(f'{r},bob,1' for r in want.recon_id)
    f = tmp_path/'more.csv'; f.write_text('recon_id,annotator,answer\n' + rows + '\n')
    line = assert_clear_error(cli('labels', 'import', '--format', 'csv', f, '--run', run.path), 'no space')
    assert 'move the file aside' not in line and 'intact' in line
    (mount/'filler').unlink()
    assert n_labels(run) == 4

# ---- one label source: auto stays with the proxies until the humans cover enough ---------------------------------

def test_auto_source_after_a_proxy_run_and_ten_human_labels(tmp_path):
    run = make_degraded_run(tmp_path/'runs'/'big', n=100)                       # 2 victims x 100 = 200 reconstructions
    label_with_proxies(run, panel_size=2, n_train=300, epochs=1, cache_dir=tmp_path/'cache')
    lab = Labeller(run, 'alice')
    for _ in range(10): lab.answer(lab.true_class)
    src = label_source(run)
    assert src['kind'] == 'proxy:panel'
    assert 'humans: 10 of 200 reconstructions (below the threshold)' in src['note'], src['note']
    assert (src['n_reconstructions'], src['n_total']) == (200, 200)
    assert set(agreement(run)['per_annotator'].annotator) == {'proxy:panel:0', 'proxy:panel:1'}
    t = pd.read_parquet(run.reconstructions)
    order = [r for m, g in t.groupby('model_id') for r in g.recon_id[:20]]      # 20 per victim: enough
    lab = Labeller(run, 'alice', order=order)
    while lab.current is not None: lab.answer(lab.true_class)
    src = label_source(run)
    assert src['kind'] == 'humans' and src['annotators'] == ['alice'], src
    assert src['n_reconstructions'] >= 40 and src['note'].startswith(f"humans: {src['n_reconstructions']} of 200")
    assert set(agreement(run)['per_annotator'].annotator) == {'alice'}
    assert votes(run).proxy.max() == 0
    assert label_source(run, min_per_victim=40)['kind'] == 'proxy:panel'


# ---- a finished run on a read-only mount: analyze and the report read it; writing into it says read-only ---------

@pytest.fixture(scope='module')
def finished_run(tmp_path_factory):
    "A small finished pipeline run (the release fixture as its experiment), report included."
    from semsim.pipeline import load_config, run_pipeline, STEPS
    from semsim.report import REPORT_STEP
    tmp = tmp_path_factory.mktemp('finished')
    release_fixture(tmp/'release', n_images=12, seed=3)
    cfg = load_config(dataset='fashion_mnist', params=[
        ('name', 'done'), ('labels.source', f'import:semsim-release:{tmp/"release"}'),
        ('metrics.names', '[psnr, mse, ssim]'), ('semsim.epochs', '1'), ('analysis.bootstrap', '50')])
    return run_pipeline(cfg, tmp/'runs', verbose=False, steps=STEPS + [REPORT_STEP])

def test_analyze_and_report_of_a_read_only_run(finished_run, tmp_path):
    m = tmp_path/'mnt'; m.mkdir()
    r = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=64m', 'tmpfs', str(m)], capture_output=True, text=True)
    if r.returncode: pytest.skip(f'cannot mount a tmpfs here ({r.stderr.strip()}); the read-only case needs root')
    try:
        run = RunDir(m/'done'); shutil.copytree(finished_run.path, run.path, ignore=shutil.ignore_patterns('*.lock'))
        before = sorted((str(p.relative_to(m)), p.stat().st_size) for p in m.rglob('*'))
        gc.collect(); subprocess.run(['mount', '-o', 'remount,ro', str(m)], check=True)
        p = cli('analyze', run.path, '--out', tmp_path/'a', '--resamples', 50)
        assert p.returncode == 0, p.stderr[-3000:]
        assert 'import:semsim-release' in p.stdout and '24 of 24 reconstructions' in p.stdout, p.stdout[-2000:]
        corr = pd.read_csv(tmp_path/'a'/'correlations.csv')
        assert set(corr.metric) >= {'psnr', 'mse', 'ssim'} and (corr.n == 24).all()
        assert 'warning: 2 victims: no model-level correlation' in p.stderr
        p = cli('report', '--run', run.path, '--out', tmp_path/'rep')
        assert p.returncode == 0, p.stderr[-3000:]
        assert 'release:0' in (tmp_path/'rep'/'report.html').read_text()
        assert_clear_error(cli('analyze', run.path, '--out', run.analysis_dir), 'read-only', '--out')
        assert_clear_error(cli('report', '--run', run.path), 'read-only', '--out')
        assert sorted((str(p.relative_to(m)), p.stat().st_size) for p in m.rglob('*')) == before   # nothing changed
    finally: subprocess.run(['umount', '-l', str(m)], capture_output=True)


def test_a_smaller_proxy_panel_later_never_mixes_with_the_old_members(run):
    ids = sorted(open_labels(run).truth)[:3]
    def panel(n):
        with open_labels(run) as st:
            st.start_session('proxy:panel', 'class', dict(kind='proxy:panel', panel_size=n))
            st.add_many(pd.DataFrame([dict(recon_id=r, annotator=f'proxy:panel:{i}', protocol='class',
                                           answer=int(st.truth[r]), proxy=1) for r in ids for i in range(n)]))
    panel(5); panel(3)
    from semsim.votes import source_labels
    assert sorted(source_labels(run, 'proxy:panel').annotator.unique()) == [f'proxy:panel:{i}' for i in range(3)]
    assert set(votes(run, source='proxy:panel').votes_total) == {3}
