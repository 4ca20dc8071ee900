"""Run configuration: every key declared once with type, default and help (``schema``), the key
machinery (``keys``), and what names a run (``naming``). Import from here."""
from .keys import ConfigError, flatten, parse_value
from .naming import config_hash, help_text, identity_diff, iter_keys, run_name
from .schema import (DATASETS, EXPORT_FORMATS, PRESETS, PRUNE_METHODS, Config, DataConfig, ExportConfig, LogConfig,
                     ModelConfig, OptimConfig, PruneConfig, ScheduleConfig)

__all__ = ["ConfigError", "flatten", "parse_value", "config_hash", "help_text", "identity_diff", "iter_keys",
           "run_name", "DATASETS", "EXPORT_FORMATS", "PRESETS", "PRUNE_METHODS", "Config", "DataConfig",
           "ExportConfig", "LogConfig", "ModelConfig", "OptimConfig", "PruneConfig", "ScheduleConfig"]
