"""Key press to next image in a real JupyterLab: `semsim label`'s notebook on a run, driven by headless Chromium.

For each of N labels: press a digit key, then wait until the progress label shows one more answer and the
reconstruction image has changed. Prints the median and p95 in ms, and the machine. Not a timed test.

    .venv/bin/python benchmarks/label_latency.py [--n 50] [--run runs/fashion_mnist]

With `--run`, a copy of that run is labelled (the run itself is not touched); without it, a small run is made.
"""
import argparse, os, platform, shutil, statistics, subprocess, sys, tempfile, time, urllib.request
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent.parent/'tests'))
from conftest import make_degraded_run          # a run of real Fashion-MNIST originals and noisy reconstructions
from semsim.labelling import start_labelling

CHROMIUM = '/usr/bin/chromium'
ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking']

def main(n: int, source: str|None=None):
    from playwright.sync_api import sync_playwright
    tmp = Path(tempfile.mkdtemp())
    for k, d in (('JUPYTER_RUNTIME_DIR', 'rt'), ('JUPYTERLAB_SETTINGS_DIR', 'settings'),
                 ('JUPYTERLAB_WORKSPACES_DIR', 'ws'), ('JUPYTER_CONFIG_DIR', 'cfg')):
        os.environ[k] = str(tmp/d)
    if source:
        shutil.copytree(source, tmp/'run', ignore=shutil.ignore_patterns('labelling', 'report.*'))
        from semsim.core import RunDir
        run = RunDir(tmp/'run')
    else: run = make_degraded_run(tmp/'run', n=n + 5, models=('noise-m',))
    proc, url = start_labelling(run.path, 'latency', wait=False)
    base, token = url.split('/lab/')[0], url.split('token=')[1]
    for _ in range(120):
        try: urllib.request.urlopen(f'{base}/api/status?token={token}', timeout=2); break
        except OSError: time.sleep(0.5)
    times = []
    try:
        with sync_playwright() as p:
            page = p.chromium.launch(executable_path=CHROMIUM, args=ARGS).new_page(
                viewport={'width': 1400, 'height': 1000})
            page.goto(url)
            page.get_by_text('| Idle').first.wait_for(timeout=120_000)
            page.locator('.lm-MenuBar-itemLabel', has_text='Run').first.click()
            page.locator('.lm-Menu-itemLabel').get_by_text('Run All Cells', exact=True).first.click()
            page.locator('.semsim-keycapture').first.wait_for(state='visible', timeout=120_000)
            page.locator('.semsim-progress').first.wait_for(timeout=60_000)
            start = int(page.locator('.semsim-progress').first.inner_text().split('/')[0])
            page.locator('.semsim-recon').first.click()
            for i in range(n):
                before = page.locator('.semsim-recon').first.get_attribute('src')
                t0 = time.perf_counter()
                page.keyboard.press(str(i % 10))
                page.wait_for_function(
                    "([want, src]) => { const p = document.querySelector('.semsim-progress');"
                    " const im = document.querySelector('.semsim-recon');"
                    " return p && p.textContent.startsWith(want) && im && im.getAttribute('src') !== src; }",
                    arg=[f'{start + i + 1} /', before], polling='raf', timeout=30_000)
                times.append((time.perf_counter() - t0) * 1000)
    finally:
        proc.terminate(); proc.wait(10)
    times.sort()
    p95 = times[min(len(times) - 1, int(round(0.95 * (len(times) - 1))))]
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}")
    print(f"run: {source or 'a small made run'}")
    print(f"key press -> next image shown, {len(times)} labels: median {statistics.median(times):.0f} ms, "
          f"p95 {p95:.0f} ms, max {times[-1]:.0f} ms")

if __name__ == '__main__':
    a = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    a.add_argument('--n', type=int, default=50, help='labels to time')
    a.add_argument('--run', default=None, help='label a copy of this run (default: a small made run)')
    args = a.parse_args(); main(args.n, args.run)
