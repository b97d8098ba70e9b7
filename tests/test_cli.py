"""The console script's command table: fast help built with placeholders must equal the fully imported help."""

import json
import os
import subprocess
import sys

from elasticast_cli import COMMANDS

RUN = "import sys; from elasticast_cli import main; sys.exit(main())"


def _help(program: str, *args: str) -> str:
    done = subprocess.run([sys.executable, "-c", program, *args], capture_output=True, text=True, timeout=300,
                          env={"COLUMNS": "100", **os.environ})
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_top_level_help_lists_every_command_of_the_table():
    text = _help(RUN, "--help")
    for command in COMMANDS:
        assert command.name in text


def test_help_does_not_import_torch():
    probe = ("import sys\nfrom elasticast_cli import main\ntry:\n    main(['classify', '--help'])\nexcept SystemExit:\n"
             "    pass\nprint([n for n in ('torch', 'transformers') if getattr(sys.modules.get(n), '__file__', None)])")
    assert _help(probe).splitlines()[-1] == "[]"  # placeholders have no __file__; a real import would


def test_fast_help_equals_the_fully_imported_help():
    names = sorted({c.name for c in COMMANDS})
    # One process imports the package (so main() never uses placeholders) and prints every command's help.
    full = ("import contextlib, io, json, sys, elasticast\nfrom elasticast_cli import main\nout = {}\n"
            "for name in sys.argv[1:]:\n    buffer = io.StringIO()\n"
            "    with contextlib.redirect_stdout(buffer), contextlib.suppress(SystemExit):\n"
            "        main([name, '--help'])\n    out[name] = buffer.getvalue()\nprint(json.dumps(out))")
    expected = json.loads(_help(full, *names).splitlines()[-1])
    for name in names:
        assert _help(RUN, name, "--help") == expected[name], name


def test_help_in_process_leaves_no_placeholder_behind():
    probe = ("import sys\nfrom elasticast_cli import main\ntry:\n    main(['evaluate', '--help'])\nexcept SystemExit:\n"
             "    pass\nimport numpy\nprint(numpy.__file__ is not None, numpy.zeros(2).sum())")
    assert _help(probe).splitlines()[-1] == "True 0.0"
