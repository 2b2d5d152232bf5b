"""Helpers the tests share: real-format data makers, command-line workflows, a crash callback."""
