"""`pssync worker`: prepare Kafka and the registry, then run the Faust worker."""

from __future__ import annotations

import logging
from typing import NoReturn

import faust

from pssync.app import create_app, prepare
from pssync.logs import setup_logging
from pssync.settings import Settings

log = logging.getLogger(__name__)


def run_worker(settings: Settings) -> NoReturn:
    setup_logging(settings)
    log.info(
        "preparing: kafka=%s registry=%s app_id=%s prefix=%r",
        settings.kafka_bootstrap,
        settings.schema_registry_url,
        settings.app_id,
        settings.topic_prefix,
    )
    codec = prepare(settings)
    app, _ = create_app(settings, codec)
    worker = faust.Worker(
        app,
        loglevel=settings.log_level,
        quiet=True,
        redirect_stdouts=False,
        override_logging=False,
    )
    worker.execute_from_commandline()
