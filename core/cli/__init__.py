"""The command line's parts: argument checks (`args`), the parser (`parser`) and one function per subcommand
(`commands`); `python -m core` (core/__main__.py) parses and dispatches.

The command line sits on top of `core.app`, `core.study` and `core.engine`. Each subcommand imports the
layers it uses when it runs, so `--help` and usage errors answer at once, without loading torch.
"""
