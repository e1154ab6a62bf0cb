"""One partition per registered dataset (the config's `datasets`, plus the built-in demo)."""


import dagster as dg

from pipeline.config import load_config

dataset_partitions = dg.StaticPartitionsDefinition(sorted(load_config().datasets))


def dataset_of(context: dg.AssetExecutionContext) -> str:
    return context.partition_key
