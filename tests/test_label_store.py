"The label store under concurrency, SIGKILL, corruption and locks; importers and the labels CLI."
import argparse, contextlib, io, os, signal, sqlite3, subprocess, sys, time
import pandas as pd
import pytest
from semsim.core import SemsimError, RunDir, recon_id
from semsim.data import image_id
from semsim.labels import LabelStore
from semsim.votes import votes, agreement, label_source
from semsim.labelio import release_fixture, import_semsim_release, read_answers, register_commands

WRITER = r"""
import sys, time
from pathlib import Path
from semsim.labels import LabelStore
db, who, n, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
s = LabelStore(db)
while not go.exists(): time.sleep(0.01)            # start writing together
i = 0
while n < 0 or i < n:
    rid = s.add(f'r{i % 1000}', who, i % 10, recognized=i % 2)
    print(rid, f'r{i % 1000}', flush=True)          # printed only after the commit returned
    i += 1
"""

def _writer(db, who, n, go):
    return subprocess.Popen([sys.executable, '-c', WRITER, str(db), who, str(n), str(go)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

def test_two_processes_500_labels_each_give_1000_rows(tmp_path):
    db, go = tmp_path/'labels.sqlite', tmp_path/'go'
    procs = [_writer(db, who, 500, go) for who in ('ann1', 'ann2')]
    time.sleep(0.5); go.touch()
    outs = [p.communicate(timeout=50) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    rows = LabelStore(db).rows()
    assert len(rows) == 1000
    assert rows.id.is_unique
    assert rows.groupby('annotator').size().to_dict() == {'ann1': 500, 'ann2': 500}
    assert sorted(int(l.split()[0]) for o in outs for l in o[0].splitlines()) == sorted(rows.id)
    con = sqlite3.connect(db); assert con.execute('PRAGMA integrity_check').fetchone()[0] == 'ok'
    assert con.execute('PRAGMA journal_mode').fetchone()[0] == 'wal'

def test_sigkill_mid_labelling_loses_no_committed_label(tmp_path):
    db, go = tmp_path/'labels.sqlite', tmp_path/'go'
    go.touch()
    p = _writer(db, 'victim', -1, go)
    committed = []
    for line in p.stdout:
        committed.append(line.split())
        if len(committed) >= 150: break
    os.kill(p.pid, signal.SIGKILL); p.wait(timeout=10)
    assert p.returncode == -signal.SIGKILL
    rows = LabelStore(db).rows().set_index('id')
    for rid, rec in committed: assert rows.recon_id[int(rid)] == rec
    assert len(rows) >= len(committed)
    assert sqlite3.connect(db).execute('PRAGMA integrity_check').fetchone()[0] == 'ok'

def test_corrupt_database_is_named_and_left_untouched(tmp_path):
    bad = tmp_path/'labels.sqlite'
    data = b'\x00garbage, not SQLite\x01' * 512
    bad.write_bytes(data)
    with pytest.raises(SemsimError) as e: LabelStore(bad)
    assert str(bad) in str(e.value) and 'nothing was changed' in str(e.value)
    assert bad.read_bytes() == data
    assert sorted(p.name for p in tmp_path.iterdir()) == ['labels.sqlite']
    other = tmp_path/'other.sqlite'                      # an SQLite file with someone else's `labels` table
    sqlite3.connect(other).execute('CREATE TABLE labels(x)')
    with pytest.raises(SemsimError, match='not semsim'): LabelStore(other)

def test_locked_database_gives_clear_message_and_loses_nothing(tmp_path):
    db = tmp_path/'labels.sqlite'
    s = LabelStore(db, timeout=0.3)
    first = s.add('r0', 'alice', 1, recognized=1)
    holder = sqlite3.connect(db, isolation_level=None); holder.execute('BEGIN EXCLUSIVE')
    with pytest.raises(SemsimError) as e: s.add('r1', 'alice', 2, recognized=0)
    assert 'locked' in str(e.value) and 'not saved' in str(e.value) and str(db) in str(e.value)
    holder.execute('ROLLBACK'); holder.close()
    assert list(s.rows().id) == [first]
    s.add('r1', 'alice', 2, recognized=0)
    assert list(s.current('alice').recon_id) == ['r0', 'r1']

def test_append_only_undo_and_names(tmp_path):
    s = LabelStore(tmp_path/'l.sqlite')
    a = s.add('r0', 'a.b-c_d:e@f', 'yes', protocol='binary')
    s.add('r0', 'a.b-c_d:e@f', 'no', protocol='binary')
    assert s.undo('a.b-c_d:e@f')['answer'] == 'no'
    assert s.undo('a.b-c_d:e@f')['id'] == a
    assert len(s.current()) == 0 and len(s) == 4
    for bad in ('has space', 'semi;colon', 'quote"', '', 'ä'):
        with pytest.raises(SemsimError, match='annotator'): s.add('r0', bad, 'yes', protocol='binary')
    with pytest.raises(sqlite3.DatabaseError, match='append-only'): s._con.execute('DELETE FROM labels')

def test_release_import_gives_expected_votes_and_majority(tmp_path):
    expected = release_fixture(tmp_path/'release', n_images=3, seed=1)
    run = RunDir(tmp_path/'run')
    n = import_semsim_release(tmp_path/'release', run, dataset='fashion_mnist')
    assert n == dict(originals=3, reconstructions=6, labels_added=30)
    v = votes(run).set_index('recon_id')
    for e in expected.itertuples():
        rid = recon_id(e.model, 'released', image_id('fashion_mnist', 'release', e.idx))
        k = sum(a == e.cls for a in e.answers)
        assert (v.votes_recognized[rid], v.votes_total[rid], v.recognized[rid]) == (k, 5, int(k >= 3))
        assert (v.recognized[rid] == 1) == (k > 2.5)
    unanimous = sum(sum(a == e.cls for a in e.answers) == 5 for e in expected.itertuples())
    assert votes(run, threshold=0.9).recognized.sum() == unanimous
    assert label_source(run)['humans'] == [f'release:{j}' for j in range(5)]
    assert import_semsim_release(tmp_path/'release', run, dataset='fashion_mnist')['labels_added'] == 0
    gt = sorted((tmp_path/'release'/'img').glob('*/*_gt.txt'))[0]
    gt.write_text('3\n4\n-1\n2\n')
    with pytest.raises(SemsimError, match=f'{gt}:4: 4 answers, expected 5'):
        import_semsim_release(tmp_path/'release', tmp_path/'run2')
    gt.write_text('3 4\n-1 x 2\n')
    with pytest.raises(SemsimError, match=f'{gt}:2'): read_answers(gt)
    assert not (tmp_path/'run2').exists()

def test_labels_cli_import_export_agreement(tmp_path):
    release_fixture(tmp_path/'release', n_images=3, seed=2)
    p = argparse.ArgumentParser(prog='semsim'); register_commands(p.add_subparsers(dest='cmd'))
    def cli(*args):
        a, buf = p.parse_args(list(map(str, args))), io.StringIO()
        with contextlib.redirect_stdout(buf): a.func(a)
        return buf.getvalue()
    run = tmp_path/'run'
    assert 'labels_added: 30' in cli('labels', 'import', '--format', 'semsim-release', tmp_path/'release', '--run', run,
                                     '--dataset', 'fashion_mnist')
    out = cli('labels', 'export', '--run', run, '--out', tmp_path/'votes.csv')
    assert out.startswith('label source: human')
    df = pd.read_csv(tmp_path/'votes.csv')
    assert len(df) == 6 and {'votes_recognized', 'votes_total', 'recognized', 'model_id', 'image_id'} <= set(df.columns)
    cli('labels', 'export', '--run', run, '--out', tmp_path/'raw.csv', '--raw')
    raw = pd.read_csv(tmp_path/'raw.csv'); assert len(raw) == 30
    raw.assign(annotator='copy:' + raw.annotator).to_csv(tmp_path/'copy.csv', index=False)
    assert 'labels_added: 30' in cli('labels', 'import', '--format', 'csv', tmp_path/'copy.csv', '--run', run)
    assert 'fleiss_kappa' in cli('labels', 'agreement', '--run', run)
    assert agreement(run)['n_annotators'] == 10
    assert 'recognised' in cli('labels', 'export', '--format', 'semsim-train', '--run', run, '--out', tmp_path/'train')
    assert (tmp_path/'train'/'train_with_ori').is_dir()
