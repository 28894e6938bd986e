"""Running beyond one process: tf.distribute strategies (``distribute``, with the Keras
patch multi-worker training needs in ``keras_multiworker_patch``) and Slurm's requeue
(``slurm``).
"""
