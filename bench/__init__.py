"""The gateway's benchmark: ceilings of its parts, the gateway itself, and their ratios.

`python -m bench` (or `make bench`) runs everything in one go and prints a table;
`python -m bench --help` lists the sizes and switches.
"""
