"""Browser test: label 5 reconstructions with the keyboard in a real JupyterLab (headless Debian chromium driven by
Playwright), restart the kernel, reopen the notebook, and check the labels persisted and the progress resumed."""
import os, socket, sqlite3, subprocess, sys, time, secrets, urllib.request
from pathlib import Path
import pytest
from conftest import ROOT, ARTIFACTS, make_degraded_run

CHROMIUM = '/usr/bin/chromium'
N = 12
ANSWERS = 10

def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

def _serve(work, tmp_path):
    "Start JupyterLab on 127.0.0.1 with a token over `work`; yield its url and token; stop it afterwards."
    port, token = _free_port(), secrets.token_hex(16)
    env = {**os.environ, 'JUPYTER_RUNTIME_DIR': str(tmp_path/'rt'), 'JUPYTERLAB_SETTINGS_DIR': str(tmp_path/'settings'),
           'JUPYTERLAB_WORKSPACES_DIR': str(tmp_path/'ws'), 'JUPYTER_CONFIG_DIR': str(tmp_path/'cfg')}
    log = open(tmp_path/'lab.log', 'w')
    proc = subprocess.Popen([sys.executable, '-m', 'jupyter', 'lab', '--no-browser', '--allow-root', '--ip=127.0.0.1',
                             f'--port={port}', f'--IdentityProvider.token={token}', f'--ServerApp.root_dir={work}',
                             '--LabApp.news_url=', '--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate'],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f'http://127.0.0.1:{port}'
    _wait_for_lab(url, token, proc, tmp_path/'lab.log')
    yield dict(url=url, token=token, work=work)
    _stop(proc)

def _wait_for_lab(url, token, proc, log=None):
    "Wait until the JupyterLab at `url` answers; fail the test (with its log) if it does not start."
    for _ in range(120):
        try:
            urllib.request.urlopen(f'{url}/api/status?token={token}', timeout=2); return
        except OSError:
            if proc.poll() is not None: break
            time.sleep(0.5)
    proc.kill()
    pytest.fail("JupyterLab did not start" + (f": {log.read_text()[-2000:]}" if log and log.exists() else ''))

def _stop(proc):
    proc.terminate()
    try: proc.wait(10)
    except subprocess.TimeoutExpired: proc.kill()

def _need_chromium():
    if not Path(CHROMIUM).exists(): pytest.fail(f"{CHROMIUM} missing: apt-get install chromium (make test installs it)")

@pytest.fixture
def lab(tmp_path, monkeypatch):
    "`semsim label`'s JupyterLab (127.0.0.1, a token) at the annotator's own notebook under a fresh run."
    from semsim.labelling import start_labelling
    _need_chromium()
    for k, d in (('JUPYTER_RUNTIME_DIR', 'rt'), ('JUPYTERLAB_SETTINGS_DIR', 'settings'),
                 ('JUPYTERLAB_WORKSPACES_DIR', 'ws'), ('JUPYTER_CONFIG_DIR', 'cfg')):
        monkeypatch.setenv(k, str(tmp_path/d))
    run = make_degraded_run(tmp_path/'run', n=N, models=('noise-m',))
    proc, url = start_labelling(run.path, 'browser-test', wait=False)
    base, token = url.split('/lab/')[0], url.split('token=')[1]
    _wait_for_lab(base, token, proc)
    yield dict(url=base, token=token, work=run.path, notebook='labelling/browser-test.ipynb')
    _stop(proc)

def _labels(db):
    with sqlite3.connect(db) as con:
        return con.execute("SELECT recon_id, answer FROM labels WHERE annotator='browser-test' AND answer >= 0"
                           ).fetchall()

def _menu(page, menu, item):
    "Click a JupyterLab menu item by its visible text."
    page.locator('.lm-MenuBar-itemLabel', has_text=menu).first.click()
    page.locator('.lm-Menu-itemLabel').get_by_text(item, exact=True).first.click()

def _open(page, lab, notebook='labelling.ipynb'):
    "Open a notebook and wait until its kernel is idle."
    page.goto(f"{lab['url']}/lab/tree/{notebook}?token={lab['token']}")
    page.get_by_text('| Idle').first.wait_for(timeout=120_000)

def _widget_ready(page):
    "Wait for the labelling widget and its key capture; return the widget (click it to give it focus)."
    page.locator('.semsim-keycapture').first.wait_for(state='visible', timeout=120_000)
    box = page.locator('.semsim-labelling').first
    box.wait_for(state='visible', timeout=60_000)
    return box

def test_label_with_keyboard_restart_and_resume(lab):
    "`semsim label`'s notebook on a run: 10 answers by key press, a kernel restart, resume at 10, 10 rows stored."
    from playwright.sync_api import sync_playwright
    ARTIFACTS.mkdir(exist_ok=True)
    db = lab['work']/'labels.sqlite'
    keys_typed = '0123456789'[:ANSWERS]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=['--headless', '--no-sandbox', '--disable-gpu',
                                                                    '--disable-background-networking'])
        page = browser.new_page(viewport={'width': 1400, 'height': 1000})
        _open(page, lab, lab['notebook'])
        _menu(page, 'Run', 'Run All Cells')
        box = _widget_ready(page)
        page.get_by_text(f'0 / {N}').first.wait_for(timeout=60_000)
        box.locator('.semsim-recon').first.click()          # focus the widget, as a person would
        for k in keys_typed:
            page.keyboard.press(k)
            page.wait_for_timeout(300)
        assert 'saved: ' in box.locator('.semsim-message').first.inner_text()
        page.get_by_text(f'{ANSWERS} / {N}').first.wait_for(timeout=60_000)
        assert len(_labels(db)) == ANSWERS
        # restart the kernel and run everything again: the widget must come back at ANSWERS / N
        _menu(page, 'Kernel', 'Restart Kernel and Run All Cells…')
        page.locator('.jp-Dialog-button.jp-mod-accept').first.click()
        page.get_by_text(f'{ANSWERS} / {N}').first.wait_for(timeout=120_000)
        # close and reopen the page: still ANSWERS / N after running it again
        _open(page, lab, lab['notebook'])
        _menu(page, 'Run', 'Run All Cells')
        _widget_ready(page).scroll_into_view_if_needed()
        page.get_by_text(f'{ANSWERS} / {N}').first.wait_for(timeout=60_000)
        page.screenshot(path=str(ARTIFACTS/'browser-labelling.png'), full_page=True)
        browser.close()
    got = _labels(db)
    assert len(got) == ANSWERS and len({r for r, _ in got}) == ANSWERS
    assert sorted(int(a) for _, a in got) == [int(k) for k in keys_typed]

@pytest.fixture
def explorer_lab(tmp_path):
    "JupyterLab over a run with metric columns (LPIPS unavailable offline: an all-NaN column) and an explorer notebook."
    import nbformat
    from semsim.metrics import compute_metrics
    _need_chromium()
    work = tmp_path/'lab'; work.mkdir()
    run = make_degraded_run(work/'run', n=N, models=('blur-m', 'noise-m'))
    compute_metrics(run, 'psnr,mse,ssim,lpips', verbose=False)
    cell = nbformat.v4.new_code_cell("from semsim.explore import explore\nexplore('run')")
    nb = nbformat.v4.new_notebook(cells=[cell])
    nb.metadata['kernelspec'] = dict(name='python3', display_name='python3', language='python')
    nbformat.write(nb, work/'explore.ipynb')
    yield from _serve(work, tmp_path)

def test_explorer_fits_the_viewport(explorer_lab):
    "At 1366x768 the explorer's scatter and detail panel lie inside the page's width; all-NaN metrics are not offered."
    from playwright.sync_api import sync_playwright
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=['--headless', '--no-sandbox', '--disable-gpu',
                                                                    '--disable-background-networking'])
        page = browser.new_page(viewport={'width': 1366, 'height': 768})
        _open(page, explorer_lab, 'explore.ipynb')
        _menu(page, 'Run', 'Run All Cells')
        page.locator('.js-plotly-plot').first.wait_for(timeout=120_000)
        page.get_by_role('button', name='details').first.click()
        page.locator('.semsim-explorer-side table').first.wait_for(timeout=60_000)
        for what in ('.js-plotly-plot', '.semsim-explorer-side'):
            box = page.locator(what).first.bounding_box()
            assert box and box['width'] > 100, (what, box)
            assert box['x'] >= 0 and box['x'] + box['width'] <= 1366, (what, box)
        options = page.locator('select').evaluate_all("ss => ss.flatMap(s => [...s.options].map(o => o.textContent))")
        assert 'psnr' in options and 'ssim' in options and 'lpips' not in options, options
        page.screenshot(path=str(ARTIFACTS/'browser-explorer.png'))
        browser.close()
