"""`neuro doctor`: an alias of `neuro config`."""

from neuro_bitnet.cli.config_cmd import doctor_command as command

__all__ = ["command"]
