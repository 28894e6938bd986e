"""A best's save that the system refuses (keepbest.weights_h5.save under RLIMIT_FSIZE):
the OSError of the refused write, no HDF5 file or object left open, and a process that
then ends normally, through the interpreter's and HDF5's clean-up (it died of SIGSEGV
there, or in the save's own close). A real Keras model in a real process (about 5 s: the
one test of this tier that imports TensorFlow)."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap

PROBE = textwrap.dedent(
    """
    import gc, json, os, resource, signal, sys
    import h5py, keras
    from keepbest import weights_h5
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    model = keras.Sequential([keras.Input((16,)), keras.layers.Dense(1024), keras.layers.Dense(10)])
    hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
    before = len(h5py.h5f.get_obj_ids())
    rows = []
    # 20 KB: refused among the datasets' writes; 100 KB: at the file's close (123 KB whole)
    for limit in (20_000, 100_000, None):
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit or hard, hard))
        path = f"w{limit}.weights.h5"
        try:
            weights_h5.save(model, path)
            raised = None
        except Exception as exc:
            raised = [type(exc).__name__, getattr(exc, "errno", None)]
        gc.collect()
        rows.append({
            "limit": limit,
            "raised": raised,
            "files": len(h5py.h5f.get_obj_ids(types=h5py.h5f.OBJ_FILE)),
            "ids": len(h5py.h5f.get_obj_ids()) - before,
            "size": os.path.getsize(path),
        })
    resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))
    model.load_weights(path)  # the last one, saved without a limit, reads back
    print(json.dumps(rows))
    """
)


def test_a_refused_write_leaves_no_hdf5_file_open_and_the_process_ends_cleanly(tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert done.returncode == 0, done.stderr[-3000:]  # was -11 (SIGSEGV)
    assert "Exception ignored" not in done.stderr, done.stderr[-3000:]
    refused_early, refused_at_close, saved = json.loads(done.stdout.splitlines()[-1])
    for row in (refused_early, refused_at_close):
        assert row["raised"] == ["OSError", errno.EFBIG], row
        assert row["size"] <= row["limit"], row
    assert saved["raised"] is None and saved["size"] > refused_at_close["limit"], saved
    for row in (refused_early, refused_at_close, saved):
        assert row["files"] == 0 and row["ids"] == 0, row
