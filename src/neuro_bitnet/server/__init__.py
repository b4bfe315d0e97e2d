"""The neuro daemon: an OpenAI-compatible HTTP server over one loaded model.

Its client (``neuro ask --backend daemon``) is :mod:`neuro_bitnet.backends.daemon_client`.
"""
