"""Helpers the tests share: real servers, real binaries, generated models."""
