"""What the experiment-command tests share: writing a config and calling the command."""

import yaml

from newtonjax.experiments import cli


def write(tmp_path, data, name="config.yaml"):
    """Write ``data`` (a mapping, as YAML, or text as is) to ``tmp_path / name``."""
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def run_cli(args, capsys):
    """``newtonjax`` with ``args`` in this process: the exit code, stdout and stderr."""
    code = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err
