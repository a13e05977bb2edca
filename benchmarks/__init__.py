"""jobshelf benchmarks: ``python -m benchmarks`` (or ``make bench``); see ``--help``."""
