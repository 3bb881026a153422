"""The run the app opens on is the paper's PRM at the median seed of PRM − HAT over the bundled
seeds: a typical seed, computed from the runs listed, never a hand-picked one."""

from __future__ import annotations

from explorer import catalog
from explorer.catalog import RunEntry, default_key, representative_key


def entry(method: str, seed: int, acc: float, *, sequence: str = "digits-writers-binary", status: str = "finished",
          folder=catalog.SAMPLES) -> RunEntry:
    name = f"{sequence}-{method}-s{seed}"
    return RunEntry(key=f"sample_runs/{name}", path=folder / name, name=name, sequence=sequence, method=method,
                    seed=seed, n_tasks=10, tasks_done=10, acc=acc, status=status, started=None)


def test_the_median_gain_picks_the_seed_by_hand():
    # PRM − HAT per seed: s0 +0.02, s1 −0.01, s2 +0.05, s3 0.00, s4 +0.03 -> sorted: s1, s3, [s0], s4, s2
    prm = {0: 0.92, 1: 0.89, 2: 0.95, 3: 0.90, 4: 0.93}
    entries = [entry("prm", s, a) for s, a in prm.items()] + [entry("hat", s, 0.90) for s in prm]
    assert representative_key(entries, sequence="digits-writers-binary", method="prm", baseline="hat") == \
        "sample_runs/digits-writers-binary-prm-s0"
    assert default_key(entries) == "sample_runs/digits-writers-binary-prm-s0"


def test_seeds_without_their_baseline_unfinished_runs_and_other_folders_do_not_count(tmp_path):
    entries = [entry("prm", 0, 0.99), entry("hat", 0, 0.80),  # +0.19, but its HAT is stopped below
               entry("prm", 1, 0.90), entry("hat", 1, 0.89),  # +0.01
               entry("prm", 2, 0.91), entry("hat", 2, 0.88),  # +0.03
               entry("prm", 3, 0.95),  # no HAT
               entry("prm", 4, 0.80), entry("hat", 4, 0.70, folder=tmp_path)]  # HAT not bundled
    entries[1] = entry("hat", 0, 0.80, status="stopped")
    # counted: s1 +0.01, s2 +0.03 -> the lower middle of two is s1
    assert default_key(entries) == "sample_runs/digits-writers-binary-prm-s1"


def test_without_the_story_sequence_the_full_sequences_prm_run_opens():
    entries = [entry("hat", 0, 0.9, sequence="digits-mixed"), entry("prm", 0, 0.9, sequence="digits-mixed")]
    assert default_key(entries) == "sample_runs/digits-mixed-prm-s0"
    assert default_key([]) is None
