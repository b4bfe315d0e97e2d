"""Ways to run a model: in process (native), through an external llama-cli, or via the daemon."""
