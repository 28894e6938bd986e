"""What happens during ``fit``: one Keras callback, ``loop.TrainingLoop``, turns Keras'
hooks into keepbest's moments and calls the parts, each a small class with obvious state:

- ``best.BestCheckpoint``: judge each evaluation point on its measured value, save a new
  best durably, decide to stop on patience or a non-finite value;
- ``history.HistoryCSV``: one ``history.csv`` row per evaluation point;
- ``resume.ResumeWriter`` and ``resume.Cadence``: resume states, on a cadence that bounds
  their cost, and always on stop requests, early stops and the end of training;
- listeners of each ``points.EvaluationPoint``: ``report.Report`` (progress lines),
  ``tensorboard.TensorBoardLog``, and the observers a caller passes to ``train``.
"""
