"""Data: what the model needs to know (``spec``), reading files (``files``), labels
(``labels``), one class per ``data.source`` (``sources``) and the tf.data pipelines
(``pipelines``). Only ``pipelines`` and a factory's datasets need TensorFlow; importing
this package imports none of it.
"""
