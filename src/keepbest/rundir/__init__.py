"""The run directory on disk, and everything that reads it without TensorFlow.

``layout`` (every name in a run dir), ``record`` (the best checkpoint's record and its
durable commit), ``resume_store`` (resume states), ``lock`` (one trainer per run dir),
``history`` (``history.csv``), ``status`` (new / running / resumable / done / failed),
``show`` (``keepbest show``), ``table`` (``keepbest summary``) and ``plot``
(``keepbest plot``, with matplotlib).
"""
