"""The Keras callbacks ``train`` puts in ``fit``, in the order it puts them:

- ``best.BestCheckpoint``: judge each epoch on its measured value, save a new best
  durably, stop on patience or a non-finite value;
- ``tensorboard``: optional TensorBoard event files;
- ``history.HistoryCSV``: one ``history.csv`` row per epoch;
- ``resume.ResumeCheckpoint``: the resume state at epoch ends and on stop requests;
- ``report.EpochReport``: progress lines.
"""
