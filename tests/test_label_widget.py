"""The labelling widget driven as a person would: key presses (as the focused widget receives them), button clicks,
resume."""
import sqlite3
import pandas as pd
import pytest
import torch
from semsim.core import RunDir, recon_id, save_png, load_png, update_table, generator
from semsim.data import export_originals
from semsim.labelling import labelling_widget, KEYS

@pytest.fixture(scope='module')
def run(tmp_path_factory):
    "A run of 6 Fashion-MNIST originals, each with two noisy 'reconstructions' (12 to label)."
    run = RunDir(tmp_path_factory.mktemp('widget')/'run')
    orig = export_originals('fashion_mnist', 6, run)
    g, rows = generator(0), []
    for sigma in (0.1, 0.5):
        for o in orig.itertuples():
            x = load_png(run.path/o.path)
            p = save_png((x + sigma * torch.randn(x.shape, generator=g)).clamp(0, 1),
                         run.recon_png(f'n{sigma}', 'noise', o.image_id))
            rows.append(dict(recon_id=recon_id(f'n{sigma}', 'noise', o.image_id), dataset='fashion_mnist',
                             model_id=f'n{sigma}', attack_id='noise', image_id=o.image_id, class_id=o.class_id,
                             original_path=o.path, recon_path=str(p.relative_to(run.path)), status='ok',
                             psnr=1.0 / sigma))
    update_table(run.reconstructions, pd.DataFrame(rows))
    return run

def _widgets(w):
    yield w
    for c in getattr(w, 'children', ()): yield from _widgets(c)

def test_keys_and_clicks_store_answers_and_show_progress(run):
    w = labelling_widget(run, 'kim')
    assert (w.counter.value, w.bar.value, w.bar.max) == ('0 / 12', 0, 12)
    assert w.recon_image.value[:8] == b'\x89PNG\r\n\x1a\n' and not w.show_original
    shown = [w.current]
    truth = w.true_class
    w.press(str(truth)); shown.append(w.current)            # key: the true class
    w.click('cannot'); shown.append(w.current)               # button: cannot recognise
    w.press('N'); shown.append(w.current)                    # key n (upper case works): cannot recognise
    w.click(w.class_names()[2])                              # button by class name
    assert w.counter.value == '4 / 12' and w.bar.value == 4
    cur = w.store.current('kim')
    assert list(cur.recon_id) == shown
    assert list(cur.answer) == [str(truth), '-1', '-1', '2'] and cur.recognized.iloc[0] == 1
    w.press('u'); assert w.counter.value == '3 / 12' and w.current == shown[3]
    w.click('undo'); assert w.counter.value == '2 / 12' and w.current == shown[2]
    assert len(w.store.rows()) == 6                          # undo adds rows, never deletes
    w.press('q'); assert 'does nothing' in w.message.value
    assert w.counter.value == '2 / 12'
    texts = ' '.join(str(getattr(x, a, '')) for x in _widgets(w.ui) for a in ('value', 'description')
                     if not isinstance(getattr(x, a, ''), bytes))
    assert 'psnr' not in texts and 'n0.1' not in texts and 'noise' not in texts   # blind: no metric or model shown

def test_skip_comes_back_last_and_resume(run):
    w = labelling_widget(run, 'lee', seed=3)
    first = w.current
    w.press('s'); assert w.current != first and w.counter.value == '0 / 12'
    w.press('0123456789'[:5])                                # five answers typed in one go
    assert w.counter.value == '5 / 12'
    again = labelling_widget(run, 'lee', seed=3)             # a new kernel / session resumes
    assert (again.counter.value, again.current, again.order) == ('5 / 12', w.current, w.order)
    assert labelling_widget(run, 'lee', seed=4).order != w.order
    assert labelling_widget(run, 'mia', seed=3).order != w.order
    for k in '1' * 6: again.press(k)                         # the 6 unseen ones
    assert again.current == first                            # the skipped one comes back last
    again.press('7'); assert again.current is None and again.counter.value == '12 / 12'
    assert 'all 12 labelled' in again.message.value
    again.press('3'); assert again.counter.value == '12 / 12'
    again.press('u'); assert again.current == first and again.counter.value == '11 / 12'

def test_binary_protocol_shows_original_and_takes_y_n(run):
    w = labelling_widget(run, 'noor', protocol='binary')
    assert w.show_original and w.original_image.value[:4] == b'\x89PNG'
    assert set(KEYS['binary']) == {'y', 'n', 's', 'u'}
    w.press('y'); w.press('n'); w.click('yes'); w.click('no'); w.press('5')
    cur = w.store.current('noor', 'binary')
    assert list(cur.answer) == ['yes', 'no', 'yes', 'no'] and list(cur.recognized) == [1, 0, 1, 0]
    assert w.counter.value == '4 / 12'
    assert not labelling_widget(run, 'noor', protocol='binary', show_original=False).show_original

def test_locked_database_shows_message_and_keeps_item(run):
    w = labelling_widget(run, 'omar', timeout=0.2)
    before = w.current
    holder = sqlite3.connect(run.labels_db, isolation_level=None); holder.execute('BEGIN EXCLUSIVE')
    try: w.press('3')
    finally: holder.execute('ROLLBACK'); holder.close()
    assert 'not saved' in w.message.value and 'locked' in w.message.value
    assert w.current == before and w.counter.value == '0 / 12'
    w.press('3'); assert w.counter.value == '1 / 12'

def test_key_messages_from_the_front_end(run):
    "Each keydown the focused widget sends (a custom message {'key': ...}) is one key press; nothing accumulates."
    w = labelling_widget(run, 'pat', protocol='binary')
    for k in 'yYn': w.keys._handle_custom_msg({'key': k}, [])
    assert w.counter.value == '3 / 12'
    assert list(w.store.current('pat', 'binary').answer) == ['yes', 'yes', 'no']
    assert w.message.value.startswith('saved: no')
    w.keys._handle_custom_msg({}, [])                        # a message without a key does nothing
    assert w.counter.value == '3 / 12' and 'y yes' in w.keys.hint
    assert 'semsim-labelling' in w.ui._dom_classes and 'semsim-progress' in w.counter._dom_classes
