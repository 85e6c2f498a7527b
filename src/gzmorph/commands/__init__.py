"""One module per ``gzmorph`` subcommand (see :mod:`gzmorph.cli`)."""
