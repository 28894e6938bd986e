"""The experiment config: schema (``schema``), YAML and ``--set`` (``loading``), one line
per problem (``messages``), what may change on resume (``diff``), and ``module:function``
references (``references``). Imports no TensorFlow.

Example:

    >>> from keepbest.config import load_config
    >>> load_config("configs/quickstart.yaml", overrides=["train.epochs=3"]).train.epochs
    3
"""

from keepbest.config.loading import (
    apply_override,
    config_to_yaml,
    load_config,
    parse_yaml,
    read_yaml_file,
    reported_against,
)
from keepbest.config.schema import ExperimentConfig

__all__ = [
    "ExperimentConfig",
    "apply_override",
    "config_to_yaml",
    "load_config",
    "parse_yaml",
    "read_yaml_file",
    "reported_against",
]
