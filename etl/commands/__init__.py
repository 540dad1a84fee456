"""Command groups of the `lacrm-etl` command line, a module each."""
