"The `semsim victims` commands, driven through an argparse parser built with `register_commands`."
import argparse, json
import pytest, torch
from semsim.core import SemsimError
from semsim.victims import register_commands, load_victim, list_victims


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
    assert 'lenet6-crop-e1-s0: trained' in out
    d = run/'victims'/'lenet6-crop-e1-s0'
    assert (d/'model.safetensors').exists() and not list(d.glob('.*.tmp'))
    meta = json.loads((d/'model.json').read_text())
    assert (meta['arch'], meta['width'], meta['dataset'], meta['variant'], meta['epochs']) == ('lenet', 6, 'digits', 'crop', 1)
    assert 0 <= meta['test_accuracy'] <= 1 and meta['versions']['torch']
    model, _ = load_victim(run, 'lenet6-crop-e1-s0', expect_arch='lenet', expect_dataset='digits')
    assert model(torch.rand(2, 1, 8, 8)).shape == (2, 10)
    assert 'skipped' in semsim(capsys, 'victims', 'train', '--run', run, '--dataset', 'digits', '--arch', 'lenet',
                               '--width', 6, '--variant', 'crop', '--epochs', 1, '--lr', 0.01, '--quiet')
    assert 'lenet6-crop-e1-s0' in semsim(capsys, 'victims', 'list', '--run', run)


def test_zoo_resumes(tmp_path, capsys):
    cfg = tmp_path/'zoo.yaml'
    cfg.write_text("dataset: digits\ntrain: {lr: 0.01}\nzoo:\n  - {arch: lenet, width: 4, variant: [none, noise1e-3], epochs: [0, 1]}\n")
    run = tmp_path/'run'
    first = semsim(capsys, 'victims', 'zoo', '--run', run, '--config', cfg, '--quiet')
    assert first.count('trained') == 4
    assert list_victims(run) == sorted(['lenet4-none-e0-s0', 'lenet4-none-e1-s0', 'lenet4-noise1e-3-e0-s0', 'lenet4-noise1e-3-e1-s0'])
    assert semsim(capsys, 'victims', 'zoo', '--run', run, '--config', cfg, '--quiet').count('skipped') == 4


def test_bad_input(tmp_path, capsys):
    with pytest.raises(SemsimError, match='lenet, convnet'):
        semsim(capsys, 'victims', 'train', '--run', tmp_path, '--arch', 'vgg', '--quiet')
    with pytest.raises(SemsimError, match='too small'):
        semsim(capsys, 'victims', 'train', '--run', tmp_path, '--dataset', 'digits', '--arch', 'convnet', '--epochs', 0, '--quiet')
    with pytest.raises(SemsimError, match='unknown variant'):
        semsim(capsys, 'victims', 'train', '--run', tmp_path, '--arch', 'lenet', '--variant', 'mixup', '--quiet')
    (tmp_path/'bad.yaml').write_text('zoo: [{arch: lenet, depth: 3}]')
    with pytest.raises(SemsimError, match='depth'):
        semsim(capsys, 'victims', 'zoo', '--run', tmp_path, '--config', tmp_path/'bad.yaml')
    assert 'resnet18' in semsim(capsys, 'victims', 'list')
