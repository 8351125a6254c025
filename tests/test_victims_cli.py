"The `semsim victims` commands, driven through an argparse parser built with `register_commands`."
import argparse, json
import pytest, torch
from semsim.core import SemsimError
from semsim.victims import register_commands, load_victim, list_victims
from conftest import semsim_cli as cli


def semsim(capsys, *argv):
    parser = argparse.ArgumentParser(prog='semsim')
    register_commands(parser.add_subparsers(dest='cmd', required=True))
    args = parser.parse_args([str(a) for a in argv])
    args.func(args)
    return capsys.readouterr().out


def test_train_list_and_skip(tmp_path, capsys):
    run = tmp_path/'run'
    out = semsim(capsys, 'victims', 'train', '--run', run, '--dataset', 'digits', '--arch', 'lenet', '--width', 6,
                 '--variant', 'crop', '--epochs', 1, '--lr', 0.01, '--quiet')
    assert 'lenet6-crop-e1-s0-lr0.01: trained' in out
    d = run/'victims'/'lenet6-crop-e1-s0-lr0.01'
    assert (d/'model.safetensors').exists() and not list(d.glob('.*.tmp'))
    meta = json.loads((d/'model.json').read_text())
    got = meta['arch'], meta['width'], meta['dataset'], meta['variant'], meta['epochs']
    assert got == ('lenet', 6, 'digits', 'crop', 1)
    assert 0 <= meta['test_accuracy'] <= 1 and meta['versions']['torch']
    model, _ = load_victim(run, 'lenet6-crop-e1-s0-lr0.01', expect_arch='lenet', expect_dataset='digits')
    assert model(torch.rand(2, 1, 8, 8)).shape == (2, 10)
    assert 'skipped' in semsim(capsys, 'victims', 'train', '--run', run, '--dataset', 'digits', '--arch', 'lenet',
                               '--width', 6, '--variant', 'crop', '--epochs', 1, '--lr', 0.01, '--quiet')
    assert 'lenet6-crop-e1-s0-lr0.01' in semsim(capsys, 'victims', 'list', '--run', run)


def test_zoo_resumes(tmp_path, capsys):
    cfg = tmp_path/'zoo.yaml'
    cfg.write_text("dataset: digits\ntrain: {lr: 0.01}\n"
                   "zoo:\n  - {arch: lenet, width: 4, variant: [none, noise1e-3], epochs: [0, 1]}\n")
    run = tmp_path/'run'
    first = semsim(capsys, 'victims', 'zoo', '--run', run, '--config', cfg, '--quiet')
    assert first.count('trained') == 4
    assert list_victims(run) == sorted(['lenet4-none-e0-s0', 'lenet4-none-e1-s0-lr0.01', 'lenet4-noise1e-3-e0-s0',
                                        'lenet4-noise1e-3-e1-s0-lr0.01'])
    assert semsim(capsys, 'victims', 'zoo', '--run', run, '--config', cfg, '--quiet').count('skipped') == 4


def test_bad_input(tmp_path, capsys):
    with pytest.raises(SemsimError, match='lenet, lenet-dlg, convnet'):
        semsim(capsys, 'victims', 'train', '--run', tmp_path, '--arch', 'vgg', '--quiet')
    with pytest.raises(SemsimError, match='too small'):
        semsim(capsys, 'victims', 'train', '--run', tmp_path, '--dataset', 'digits', '--arch', 'convnet',
               '--epochs', 0, '--quiet')
    with pytest.raises(SemsimError, match='unknown variant'):
        semsim(capsys, 'victims', 'train', '--run', tmp_path, '--arch', 'lenet', '--variant', 'mixup', '--quiet')
    (tmp_path/'bad.yaml').write_text('zoo: [{arch: lenet, depth: 3}]')
    with pytest.raises(SemsimError, match='depth'):
        semsim(capsys, 'victims', 'zoo', '--run', tmp_path, '--config', tmp_path/'bad.yaml')
    assert 'resnet18' in semsim(capsys, 'victims', 'list')


@pytest.mark.parametrize('option, value', [('--lr', 'nan'), ('--lr', '-0.1'), ('--max-train', -5),
                                           ('--max-train', 0), ('--batch-size', 0), ('--width', 1000000)])
def test_bad_training_settings_are_refused(tmp_path, option, value):
    rc, out, err = cli('victims', 'train', '--run', tmp_path/'run', '--dataset', 'digits', '--arch', 'lenet',
                       '--epochs', 1, option, value, '--quiet')
    lines = [l for l in err.splitlines() if l.strip()]
    assert rc == 2 and len(lines) == 1 and 'Traceback' not in err, (rc, err)
    assert option in lines[0] and 'fix:' in lines[0], lines[0]
    assert list_victims(tmp_path/'run') == []                 # nothing saved as trained


def test_diverging_training_saves_nothing(tmp_path, capsys):
    with pytest.raises(SemsimError, match='diverged'):
        semsim(capsys, 'victims', 'train', '--run', tmp_path, '--dataset', 'digits', '--arch', 'lenet', '--width', 4,
               '--epochs', 1, '--max-train', 128, '--lr', 1e38, '--quiet')
    assert list_victims(tmp_path) == []
