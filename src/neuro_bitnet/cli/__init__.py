"""The `neuro` command line."""
