"""The command line: ``train --config exp.yaml`` and ``keepbest <command>``.

Every keepbest error ends the process with one ``error: ...`` line per problem on stderr
and its documented exit code (see ``keepbest.errors``), never a traceback.

Example::

    train --config configs/quickstart.yaml --set train.epochs=5
    keepbest train --config configs/quickstart.yaml --print-config
"""

from __future__ import annotations

import os
import sys

import click

from keepbest.errors import KeepbestError

# TensorFlow's INFO chatter (oneDNN notices...) drowns the one-line-per-epoch log; it must
# be silenced before TensorFlow is first imported. Users can still set their own level.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """keepbest: train Keras models and keep the provably best checkpoint."""


@cli.command("train")
@click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="The experiment's YAML file.",
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a config value (parsed as YAML), e.g. --set train.epochs=30. Repeatable.",
)
@click.option("--print-config", is_flag=True, help="Print the resolved config and exit.")
@click.option(
    "--restart",
    is_flag=True,
    help="Start the run over; the old run dir is renamed aside (NAME.old-TIMESTAMP).",
)
@click.option("--overwrite", is_flag=True, help="With --restart: delete the old run instead.")
def train_command(
    config_path: str,
    overrides: tuple[str, ...],
    print_config: bool,
    restart: bool,
    overwrite: bool,
) -> None:
    """Train the model a config describes (or resume it) and verify its best checkpoint.

    A run dir holding a resume state continues where it stopped. Exit codes: 0 done,
    2 bad input, 3 verification failed, 4 no best, 5 run dir busy, 6 write failed,
    7 corrupt file, 75 stopped by a signal after saving (run again to resume).
    """
    from keepbest.config import config_to_yaml, load_config

    cfg = load_config(config_path, overrides)
    if print_config:
        click.echo(config_to_yaml(cfg), nl=False)
        return
    from keepbest.training import train

    result = train(cfg, restart=restart, overwrite=overwrite)
    click.echo(result.summary())


def _run(command: click.Command) -> None:
    try:
        command.main(standalone_mode=False)
    except KeepbestError as exc:
        for line in str(exc).splitlines():
            click.echo(f"error: {line}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)


def main() -> None:
    """Entry point of ``keepbest``."""
    _run(cli)


def train_main() -> None:
    """Entry point of ``train`` (the same as ``keepbest train``)."""
    _run(train_command)
