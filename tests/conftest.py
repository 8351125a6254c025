"""Shared pytest helpers: a small run with real Fashion-MNIST originals and degraded reconstructions, and `semsim_cli`,
which runs a `semsim` command in this process as the console script would run it in its own."""
import contextlib, io, logging, os, random, re, sys, tempfile, traceback, warnings
from pathlib import Path
from typing import NamedTuple
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
            rows.append(dict(recon_id=recon_id(m, 'ig', r.image_id), dataset='fashion_mnist', model_id=m,
                             attack_id='ig', image_id=r.image_id, class_id=int(r.class_id), original_path=r.path,
                             recon_path=str(run.recon_png(m, 'ig', r.image_id).relative_to(run.path)),
                             status='ok', attack_loss=0.1, iterations=10, seconds=0.1))
    update_table(run.reconstructions, pd.DataFrame(rows))
    return run


class CliResult(NamedTuple):
    "What a `semsim` command gave: unpacks as `(rc, stdout, stderr)`, or read it like a `CompletedProcess`."
    returncode: int
    stdout: str
    stderr: str


def _caches() -> list:
    "The module-level caches of the loaded semsim modules (dicts named like `_CACHE`, `_CALIBRATION`; lru caches)."
    found = []
    for name, mod in list(sys.modules.items()):
        if mod is None or not (name == 'semsim' or name.startswith('semsim.')): continue
        for attr, v in list(vars(mod).items()):
            if isinstance(v, dict) and re.fullmatch(r'_[A-Z_]*(CACHE|CALIBRATION)', attr): found.append(v)
            elif callable(getattr(v, 'cache_clear', None)) and getattr(v, '__module__', None) == name: found.append(v)
    return found


@contextlib.contextmanager
def _fresh_process_state(env, cwd):
    "Run the block as a new process would: cold caches, fresh warning registry, `env` and `cwd`; restore all after."
    saved_env, saved_cwd = dict(os.environ), os.getcwd()
    rng = random.getstate(), np.random.get_state(), torch.get_rng_state()
    threads, grad, np_err = torch.get_num_threads(), torch.is_grad_enabled(), np.geterr()
    caches = [(c, dict(c)) if isinstance(c, dict) else (c, None) for c in _caches()]
    root = logging.getLogger(); handlers, level = root.handlers[:], root.level
    for c, _ in caches: c.clear() if isinstance(c, dict) else c.cache_clear()
    try:
        if env is not None: os.environ.clear(); os.environ.update({k: str(v) for k, v in env.items()})
        if cwd is not None: os.chdir(cwd)
        root.handlers, root.level = [], logging.WARNING          # no pytest log capture: stderr, as in a new process
        with warnings.catch_warnings():
            warnings.resetwarnings()                             # Python's default filters, and nothing seen yet
            for cat in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
                warnings.simplefilter('ignore', cat)
            warnings.showwarning = lambda message, category, filename, lineno, file=None, line=None: sys.stderr.write(
                warnings.formatwarning(message, category, filename, lineno, line))
            yield
    finally:
        os.chdir(saved_cwd); os.environ.clear(); os.environ.update(saved_env)
        random.setstate(rng[0]); np.random.set_state(rng[1]); torch.set_rng_state(rng[2])
        torch.set_num_threads(threads); torch.set_grad_enabled(grad); np.seterr(**np_err)
        root.handlers, root.level = handlers, level
        for c, before in caches:
            if before is None: c.cache_clear()
            else: c.clear(); c.update(before)


@contextlib.contextmanager
def _captured_fds():
    "Collect what is written to file descriptors 1 and 2 (C code, child processes) in the block: yields a dict."
    got = {}
    with tempfile.TemporaryFile() as f1, tempfile.TemporaryFile() as f2:
        sys.stdout.flush(); sys.stderr.flush()
        saved = os.dup(1), os.dup(2)
        os.dup2(f1.fileno(), 1); os.dup2(f2.fileno(), 2)
        try: yield got
        finally:
            os.dup2(saved[0], 1); os.dup2(saved[1], 2); os.close(saved[0]); os.close(saved[1])
            for k, f in (('out', f1), ('err', f2)): f.seek(0); got[k] = f.read().decode(errors='replace')


def semsim_cli(*argv, env=None, cwd=None) -> CliResult:
    """Run `semsim ARGV` in this process, as the console script runs it (`sys.exit(main())`) but without paying the
    package import again: stdout and stderr captured (Python and file-descriptor level), argparse's exit taken as the
    exit status, an uncaught exception printed as a traceback with status 1. `env` (the whole environment) and `cwd`
    apply to the call only; seeds, torch threads, semsim's caches and the warning registry are restored after."""
    from semsim.cli import main
    out, err = io.StringIO(), io.StringIO()
    with _captured_fds() as fds, _fresh_process_state(env, cwd), \
            contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try: rc = main([str(a) for a in argv]) or 0
        except SystemExit as e:
            rc = 0 if e.code is None else e.code
            if not isinstance(rc, int): print(rc, file=sys.stderr); rc = 1
        except Exception: traceback.print_exc(); rc = 1
        sys.stdout.flush(); sys.stderr.flush()
    return CliResult(rc, out.getvalue() + fds['out'], err.getvalue() + fds['err'])


def console_script(*argv, env=None, cwd=None, timeout=600) -> CliResult:
    "Run the installed `semsim` console script in a new process (for what needs one: the entry point itself, kills)."
    import subprocess
    p = subprocess.run([str(ROOT/'.venv'/'bin'/'semsim'), *map(str, argv)], capture_output=True, text=True, env=env,
                       cwd=cwd, timeout=timeout)
    return CliResult(p.returncode, p.stdout, p.stderr)
