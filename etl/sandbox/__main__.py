"""`python -m etl.sandbox serve ...`: the sandbox alone, without loading the whole CLI."""

from etl.sandbox.cli import sandbox

sandbox(prog_name="python -m etl.sandbox")
