"""The `semsim weights` and `semsim metrics` commands offline: status, import (hash check, --trust), fetch's error,
NaN-not-random."""
import argparse
import pandas as pd, pytest, torch, torchvision
from semsim.core import SemsimError, RunDir, save_png, update_table, read_table, recon_id
from semsim import metrics as M, weights as W


@pytest.fixture(autouse=True)
def offline_dirs(tmp_path, monkeypatch):
    "A fresh data folder and torch hub cache, as on a new offline machine."
    monkeypatch.setenv('SEMSIM_DATA', str(tmp_path/'data'))
    monkeypatch.setenv('TORCH_HOME', str(tmp_path/'torch'))
    monkeypatch.setattr(M, '_LPIPS_CACHE', {})


def semsim(capsys, *argv):
    parser = argparse.ArgumentParser(prog='semsim')
    M.register_commands(parser.add_subparsers(dest='cmd', required=True))
    args = parser.parse_args([str(a) for a in argv])
    args.func(args)
    return capsys.readouterr().out


def random_squeezenet(path):
    torch.manual_seed(0)
    torch.save(torchvision.models.squeezenet1_1(weights=None).state_dict(), path)
    return path


def test_status_says_missing_and_how_to_fix(capsys, tmp_path):
    out = semsim(capsys, 'weights', 'status')
    assert sum(' missing ' in line for line in out.splitlines()) == 4
    assert 'semsim weights import FILE' in out and str(tmp_path/'torch') in out


def test_import_checks_hash_and_trust_is_explicit(capsys, tmp_path):
    f = random_squeezenet(tmp_path/'squeezenet1_1-b8a52dc0.pth')
    with pytest.raises(SemsimError, match='--trust'):
        semsim(capsys, 'weights', 'import', f)
    assert 'installed' in semsim(capsys, 'weights', 'import', f, '--trust')
    assert (tmp_path/'torch'/'hub'/'checkpoints'/'squeezenet1_1-b8a52dc0.pth').exists()
    assert 'trusted' in semsim(capsys, 'weights', 'status')
    with pytest.raises(SemsimError, match='none of the known weights'):
        semsim(capsys, 'weights', 'import', random_squeezenet(tmp_path/'mine.pth'))


def test_tampered_file_in_cache_is_not_used(tmp_path):
    d = tmp_path/'torch'/'hub'/'checkpoints'; d.mkdir(parents=True)
    random_squeezenet(d/'squeezenet1_1-b8a52dc0.pth')           # right name, wrong content, not trusted
    assert W.find_weights('squeezenet1_1')['state'] == 'hash mismatch'
    with pytest.raises(W.WeightsUnavailable, match='hash check'):
        M.lpips_distance(torch.rand(1, 28, 28), torch.rand(1, 28, 28), 'paper')


def test_fetch_offline_says_how(capsys, monkeypatch):
    def offline(*a, **k): raise OSError('Name or service not known')
    monkeypatch.setattr(torch.hub, 'download_url_to_file', offline)
    with pytest.raises(SemsimError, match='semsim weights import FILE'):
        semsim(capsys, 'weights', 'fetch', 'alexnet')
    with pytest.raises(SemsimError, match='use one of'):
        semsim(capsys, 'weights', 'fetch', 'resnet')


def test_lpips_column_is_nan_without_weights_and_filled_with_them(capsys, tmp_path):
    run = RunDir(tmp_path/'run')
    rows = []
    for i in range(3):
        g = torch.Generator().manual_seed(i)
        save_png(torch.rand(1, 28, 28, generator=g), run.path/'originals'/f'{i}.png')
        save_png(torch.rand(1, 28, 28, generator=g), run.recon_png('m', 'a', str(i)))
        rows.append(dict(recon_id=recon_id('m', 'a', str(i)), dataset='fashion_mnist', model_id='m', attack_id='a',
                         image_id=str(i), class_id=0, original_path=f'originals/{i}.png',
                         recon_path=f'recon/m/a/{i}.png', status='ok'))
    update_table(run.reconstructions, pd.DataFrame(rows))
    out = semsim(capsys, 'metrics', '--run', run.path, '--metrics', 'lpips,psnr', '--quiet')
    assert 'unavailable: lpips' in out and 'semsim weights fetch squeezenet1_1' in out
    df, meta = read_table(run.reconstructions)
    assert df.lpips.isna().all() and df.psnr.notna().all() and 'unavailable' in meta['metrics']['lpips']
    semsim(capsys, 'weights', 'import', random_squeezenet(tmp_path/'sq.pth'), '--name', 'squeezenet1_1', '--trust')
    semsim(capsys, 'metrics', '--run', run.path, '--metrics', 'lpips', '--quiet')
    df, meta = read_table(run.reconstructions)
    assert df.lpips.notna().all() and 'unavailable' not in meta['metrics']['lpips']
    assert meta['metrics']['lpips']['weights_check'].startswith('trusted')


def test_fid_features_equal_torchmetrics_with_imported_weights(tmp_path):
    """Our batched Inception features equal those torchmetrics' FID extracts (its Frechet step is the same function,
    `frechet_distance`), on a seeded random test Inception imported with --trust; absent, FID names the fix."""
    import unittest.mock
    import torch_fidelity.feature_extractor_inceptionv3 as tfi
    from torchmetrics.image.fid import FrechetInceptionDistance
    torch.manual_seed(0)
    with unittest.mock.patch.object(tfi, 'load_state_dict_from_url', lambda *a, **k: None), \
         unittest.mock.patch.object(tfi.FeatureExtractorInceptionV3, 'load_state_dict', lambda *a, **k: None):
        state = tfi.FeatureExtractorInceptionV3('inception-v3-compat', ['2048']).state_dict()
    f = tmp_path/W.WEIGHTS['inception_fid'].filename
    torch.save(state, f)
    with pytest.raises(W.WeightsUnavailable, match='semsim weights fetch inception_fid'):
        M.inception_features(torch.rand(2, 1, 28, 28))
    W.import_weights(f, trust=True)
    images = (torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(1)) * 255).round() / 255
    ours = M.inception_features(images)
    reference = FrechetInceptionDistance(feature=2048)          # finds the same file in $TORCH_HOME
    with torch.no_grad(): theirs = reference.inception((images * 255).round().to(torch.uint8).repeat(1, 3, 1, 1))
    assert ours.shape == (3, 2048) and ours.std() > 0
    torch.testing.assert_close(ours.double(), theirs.double(), atol=1e-5, rtol=1e-5)


def test_import_refuses_pickled_objects_even_trusted(capsys, tmp_path):
    "A .pth holding Python objects is never unpickled: import (with --trust) fails with one line naming the file."
    f = tmp_path/'squeezenet1_1-b8a52dc0.pth'
    torch.save({'features.0.weight': torch.zeros(1), 'extra': argparse.Namespace(a=1)}, f)
    with pytest.raises(SemsimError) as e:
        semsim(capsys, 'weights', 'import', f, '--trust')
    msg = str(e.value)
    assert str(f) in msg and 'cannot be read as plain tensors' in msg
    assert 'weights_only=False' not in msg and '\n' not in msg
    assert W.find_weights('squeezenet1_1')['state'] == 'missing' and not W._trust_file().exists()


def test_untrusted_pickle_in_cache_is_not_loaded_at_compute_time(tmp_path, monkeypatch):
    "A pickled file with the right name whose hash the user trusted earlier still fails cleanly when LPIPS loads it."
    d = tmp_path/'torch'/'hub'/'checkpoints'; d.mkdir(parents=True)
    f = d/'squeezenet1_1-b8a52dc0.pth'
    torch.save({'extra': argparse.Namespace(a=1)}, f)
    monkeypatch.setattr(W, 'trusted_hashes', lambda: {W.sha256_file(f): 'test'})
    with pytest.raises(SemsimError, match='cannot be read as plain tensors') as e:
        M.lpips_distance(torch.rand(1, 28, 28), torch.rand(1, 28, 28), 'paper')
    assert 'weights_only=False' not in str(e.value)


def test_cli_import_of_pickle_is_one_line_exit_2(tmp_path):
    "The command line: importing a pickled file exits 2 with one line, no traceback, no advice to unpickle."
    import os
    from conftest import semsim_cli
    f = tmp_path/'squeezenet1_1-b8a52dc0.pth'
    torch.save({'extra': argparse.Namespace(a=1)}, f)
    env = {**os.environ, 'SEMSIM_DATA': str(tmp_path/'data'), 'TORCH_HOME': str(tmp_path/'torch')}
    p = semsim_cli('weights', 'import', f, '--trust', env=env)
    err = [l for l in p.stderr.splitlines() if l.strip()]
    assert p.returncode == 2 and len(err) == 1 and 'Traceback' not in p.stderr, (p.returncode, p.stderr)
    assert str(f) in err[0] and 'weights_only=False' not in err[0]
