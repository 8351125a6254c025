"`semsim attack` on bad input: one clear line and exit status 2, never a traceback; failed rows never look finished."
import numpy as np, pytest, torch
from PIL import Image
from semsim.core import RunDir, read_table
from semsim.data import export_originals, load_dataset
from semsim.victims import build_model, save_victim
import semsim.attacks as attacks
from conftest import semsim_cli as cli

MODEL = 'lenet12-none-e0-s0'


def assert_clear_error(rc, out, err, *words):
    "Exit status 2, exactly one line on stderr naming every word, no traceback."
    assert rc == 2, (rc, out, err)
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1 and 'Traceback' not in err, err
    for w in words: assert w in lines[0], (w, lines[0])


def small_run(path, weights=None) -> RunDir:
    "A run with four Fashion-MNIST originals and an untrained LeNet (weights replaced by `weights` if given)."
    run = RunDir(path)
    export_originals('fashion_mnist', 4, run)
    info = load_dataset('fashion_mnist', 'test').info
    torch.manual_seed(0)
    model = build_model('lenet', info)
    if weights is not None:
        with torch.no_grad():
            for p in model.parameters(): p.fill_(weights)
    save_victim(run, model, dict(model_id=MODEL, arch='lenet', width=12, dataset='fashion_mnist', test_accuracy=0.1,
                                 info=dict(name=info.name, classes=list(info.classes), size=list(info.size),
                                           channels=info.channels, mean=list(info.mean), std=list(info.std))))
    return run


def test_bad_original_is_named_before_any_attack(tmp_path):
    run = small_run(tmp_path/'run')
    bad = sorted(run.originals_dir.glob('*.png'))[1]
    Image.fromarray(np.zeros((20, 20, 4), np.uint8), 'RGBA').save(bad)
    assert_clear_error(*cli('attack', '--run', run.path, '--model', MODEL, '--iterations', 2, '--quiet'),
                       bad.name, '28×28')
    assert not run.reconstructions.exists()                     # nothing was attacked


def test_exact_defense_id_and_nothing_usable(tmp_path):
    run = small_run(tmp_path/'run')
    rc, out, err = cli('attack', '--run', run.path, '--model', MODEL, '--iterations', 2, '--defense', 'noise:0.0100001',
                       '--quiet')
    assert rc == 0, err
    (aid,) = set(read_table(run.reconstructions)[0].attack_id)
    assert aid.startswith('ig-') and aid.endswith('+noise0.0100001'), aid    # not rounded into +noise0.01
    nan_run = small_run(tmp_path/'nan', weights=float('nan'))      # every gradient NaN: every attack diverges
    assert_clear_error(*cli('attack', '--run', nan_run.path, '--model', MODEL, '--iterations', 2, '--quiet'),
                       'no usable reconstruction', 'diverged')


def test_truncated_victim_weights(tmp_path):
    run = small_run(tmp_path/'run')
    w = run.victim_dir(MODEL)/'model.safetensors'
    w.write_bytes(w.read_bytes()[:100])
    assert_clear_error(*cli('attack', '--run', run.path, '--model', MODEL, '--iterations', 2, '--quiet'), MODEL, 'fix:')


def test_failed_rows_have_no_recon_path(tmp_path, monkeypatch):
    run = small_run(tmp_path/'run')
    def broken(*a, **k): raise RuntimeError('out of memory')
    monkeypatch.setattr(attacks, 'attack_batch', broken)
    rows = attacks.run_attack(run, MODEL, 'ig', iterations=2, batch=2, verbose=False)
    assert list(rows.status) == ['failed'] * 4 and rows.recon_path.isna().all()
    assert read_table(run.reconstructions)[0].recon_path.isna().all()   # what labelling queues filter on (notna)


def test_other_iterations_are_other_results_and_replace_says_so(tmp_path):
    run = small_run(tmp_path/'run')
    def attack(*extra):
        rc, out, err = cli('attack', '--run', run.path, '--model', MODEL, '--batch', 4, '--quiet', *extra)
        assert rc == 0, err
        return out
    attack('--iterations', 5); attack('--iterations', 10)
    table, meta = read_table(run.reconstructions)
    assert len(table) == 8 and table.attack_id.nunique() == 2                # both, next to each other
    for r in table.itertuples():
        assert meta['attacks'][r.attack_id]['iterations'] == r.iterations == (5 if r.attack_id == five_id(meta) else 10)
    ten = set(table.attack_id) - {five_id(meta)}
    out = attack('--iterations', 10, '--replace')
    assert f'replaced the reconstructions of {five_id(meta)}' in out          # the 5-step ones go, and it says so
    table = read_table(run.reconstructions)[0]
    assert set(table.attack_id) == ten and len(table) == 4 and (table.iterations == 10).all()
    assert not run.recon_dir(MODEL, five_id(meta)).exists()


def five_id(meta): return next(a for a, s in meta['attacks'].items() if s['iterations'] == 5)
