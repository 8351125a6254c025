"`semsim learn` given bad input: each case exits 2 with one line naming the file or argument, never a traceback."
import hashlib, json
import pandas as pd, pytest
from semsim.core import RunDir, update_table, recon_id
from semsim.data import export_originals
from semsim.learned import SemsimNet, save_semsim
from conftest import semsim_cli


def semsim(*argv):
    "`semsim ARGV` (in-process, see `semsim_cli`); returns (exit code, stderr lines, stdout)."
    rc, out, err = semsim_cli(*argv)
    return rc, [l for l in err.splitlines() if l.strip()], out


def assert_clear_error(rc, err, *needles):
    assert rc == 2, (rc, err)
    assert len(err) == 1 and 'Traceback' not in err[0], err
    for n in needles: assert n in err[0], (n, err[0])


@pytest.fixture
def scored_run(tmp_path):
    "A run of 4 digits originals whose 'reconstructions' are the originals, and SemSim weights for 8×8 gray images."
    run = RunDir(tmp_path/'run').mkdir()
    o = export_originals('digits', 4, run)
    update_table(run.reconstructions, pd.DataFrame(dict(
        recon_id=[recon_id('m', 'a', i) for i in o.image_id], image_id=o.image_id, model_id='m', attack_id='a',
        original_path=o.path, recon_path=o.path, status='ok')))
    save_semsim(SemsimNet('convnet', channels=1), run.semsim_dir('w'), {'size': [8, 8]})
    return run


@pytest.mark.parametrize('size', ['0', '1.5'])
def test_train_test_size_out_of_range(tmp_path, size):
    rc, err, _ = semsim('learn', 'train', '--run', tmp_path/'no-run', '--test-size', size)
    assert_clear_error(rc, err, '--test-size', size)


def test_score_with_good_weights_works(scored_run):
    rc, err, out = semsim('learn', 'score', '--run', scored_run.path, '--weights', 'w')
    assert rc == 0 and '4 reconstructions scored' in out, (rc, err, out)


def test_score_truncated_safetensors(scored_run):
    f = scored_run.semsim_dir('w')/'model.safetensors'
    f.write_bytes(f.read_bytes()[:1000])
    rc, err, _ = semsim('learn', 'score', '--run', scored_run.path, '--weights', 'w')
    assert_clear_error(rc, err, str(f), 'sha256', 'retrain')


def test_score_crafted_safetensors_with_matching_hash(scored_run):
    d = scored_run.semsim_dir('w')
    junk = b'\x10\x00\x00\x00\x00\x00\x00\x00{"w": {"dtype":'
    (d/'model.safetensors').write_bytes(junk)
    meta = json.loads((d/'model.json').read_text())
    (d/'model.json').write_text(json.dumps({**meta, 'weights_sha256': hashlib.sha256(junk).hexdigest()}))
    rc, err, _ = semsim('learn', 'score', '--run', scored_run.path, '--weights', 'w')
    assert_clear_error(rc, err, str(d/'model.safetensors'), 'not a readable safetensors file')


def test_score_broken_model_json(scored_run):
    (scored_run.semsim_dir('w')/'model.json').write_text('{"arch": ')
    rc, err, _ = semsim('learn', 'score', '--run', scored_run.path, '--weights', 'w')
    assert_clear_error(rc, err, 'model.json', 'not valid JSON')
