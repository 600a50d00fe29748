"""What the verbs share: the config a command names, and the logger."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from codecache.core.config import Config, LogFormat, load_config
from codecache.telemetry.logs import configure as configure_logging

log = logging.getLogger("codecache")


def config_of(args: argparse.Namespace) -> Config:
    """The config ``--config`` names, else ``$CODECACHE_CONFIG``, else ./codecache.toml;
    its ``[log] format`` applies unless ``--log-format`` was given."""
    path: Path | None = args.config
    if path is None:
        env = os.environ.get("CODECACHE_CONFIG")
        path = Path(env) if env else Path("codecache.toml")
    config = load_config(path)
    if args.log_format is None and config.log.format is not LogFormat.TEXT:
        configure_logging(config.log.format, debug=args.debug)
    return config
