"""Using a run's best model: ``load`` (``load_best``), ``evaluate`` (measure it again),
``predict`` (files in, predictions out) and ``export`` (a self-contained artifact for
serving). Each loads the checksum-checked best checkpoint of a run directory.
"""
