"""The `cxr-rl` command. Each package registers its own subcommands; heavy imports happen only
inside the command that needs them, so `--help` answers at once."""

import argparse
import importlib
import sys
from collections.abc import Callable

from pydantic import ValidationError

from shared.config import describe_validation_error
from shared.errors import UserError

COMMAND_MODULES = (
    "tiny_models.commands",
    "dataprep.commands",
    "dataprep.traces.commands",
    "rollout_server.commands",
    "rewards.commands",
    "trainer.commands",
    "evaluation.commands",
    "deploy.commands",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cxr-rl",
        description="SFT then GRPO reinforcement learning for vision-language models that read chest X-rays.",
    )
    subcommands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if not module_name.startswith(str(error.name)):
                raise
            continue  # a package still without commands
        module.register(subcommands)
    return parser


def run_reporting_errors(command: str, action: Callable[[], int | None]) -> int:
    """Run a command; bad input becomes one line on stderr and exit status 1, no traceback."""
    try:
        return int(action() or 0)
    except UserError as error:
        message = str(error)
    except ValidationError as error:
        message = describe_validation_error(error)
    except (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError) as error:
        message = f"{error.strerror}: {error.filename}" if error.filename else str(error)
    except KeyboardInterrupt:
        message = "interrupted"
    print(f"cxr-rl {command}: error: {message.splitlines()[0] if message else 'failed'}", file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_reporting_errors(args.command, lambda: args.run(args))


if __name__ == "__main__":
    sys.exit(main())
