"""The flint command line, including the flint up supervisor."""
