"""The ``pdl`` command line (installed as ``pdlkit.cli``): parses arguments, prints, calls pdlkit."""
