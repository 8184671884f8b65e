"""The ``cpv`` command: argument parsing and the error boundary, nothing else.

Exit codes: 0 success, 1 an operation failed (one readable line, no traceback unless
``--verbose``), 2 a usage error (click's own), 130 / 143 stopped by SIGINT / SIGTERM (one line
saying what already reached the git remote). When the output pipe is closed (``cpv model list |
head -1``) cpv stops quietly, as git does, with exit code 1: what rich and click do there too.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import signal
import sys
import traceback
from typing import Any, NoReturn

import click

from cp_manage import __version__, interrupts
from cp_manage.cli import output
from cp_manage.interrupts import Interruption, interruption


class CPVGroup(click.Group):
    """Turns every CPVError into one line on stderr and exit code 1."""

    def invoke(self, ctx: click.Context) -> Any:
        from cp_manage.errors import CPVError
        from cp_manage.fsutil import explain_os_error

        try:
            interrupts.release()  # from here on a signal is reported like any other ending
            return super().invoke(ctx)
        except CPVError as e:
            if _verbose(ctx):
                traceback.print_exc()
            output.error(str(e))
            ctx.exit(1)
        except (Interruption, KeyboardInterrupt) as e:
            if _verbose(ctx):
                traceback.print_exc()
            stop = e if isinstance(e, Interruption) else interruption(signal.SIGINT)
            output.error(str(stop))
            ctx.exit(stop.exit_code)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except OSError as e:
            if _output_closed(e):
                _quiet_exit()
            explained = explain_os_error(e)
            if explained is e:
                _unexpected(ctx, e)
            if _verbose(ctx):
                traceback.print_exc()
            output.error(str(explained))
            ctx.exit(1)
        except Exception as e:  # a bug: say so in one line, details on request
            _unexpected(ctx, e)


def _unexpected(ctx: click.Context, error: Exception) -> NoReturn:
    if _verbose(ctx):
        traceback.print_exc()
    output.error(f"Unexpected {type(error).__name__}: {error}. Run again with --verbose "
                 "for the traceback and please report it.")
    ctx.exit(1)


def _output_closed(error: OSError) -> bool:
    """Whether ``error`` is cpv writing to a pipe whose reader has gone (``| head``)."""
    if error.errno != errno.EPIPE:
        return False
    if not hasattr(select, "poll"):
        return True
    for stream in (sys.stdout, sys.stderr):
        try:
            poller = select.poll()
            poller.register(stream.fileno(), 0)
            if any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0)):
                return True
        except (OSError, ValueError, AttributeError):
            continue
    return False


def _quiet_exit() -> NoReturn:
    """Stop without a word, as the Python documentation recommends for a closed pipe: what is
    still buffered for stdout goes to /dev/null, so nothing complains at exit either."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError, AttributeError):
            os.dup2(devnull, stream.fileno())
    os.close(devnull)
    sys.exit(1)


def _verbose(ctx: click.Context) -> bool:
    root = ctx.find_root()
    return bool(root.params.get("verbose")) if root.params else False


@click.group(cls=CPVGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="cpv")
@click.option("-v", "--verbose", is_flag=True, envvar="CPV_VERBOSE",
              help="Log what happens, and show tracebacks.")
def cli(verbose: bool) -> None:
    """cpv: version model checkpoints and training data with git + DVC.

    Start with 'cpv init --team T --model M', then 'cpv model upload' and 'cpv model tag'.
    """
    output.setup_logging(verbose)


def _register() -> None:
    from cp_manage.cli import (
        checkpoints,
        config_cmd,
        demo,
        doctor_cmd,
        gc_cmd,
        init_cmd,
        queue_cmd,
    )

    cli.add_command(init_cmd.init)
    cli.add_command(doctor_cmd.doctor)
    cli.add_command(demo.demo)
    model = checkpoints.make_group("model")
    queue_cmd.register(model)
    cli.add_command(model)
    cli.add_command(checkpoints.make_group("data"))
    cli.add_command(config_cmd.config)
    cli.add_command(gc_cmd.make_gc())
    cli.add_command(gc_cmd.make_du())
    for extra in checkpoints.extra_commands():
        cli.add_command(extra)
    _verbose_everywhere(cli)


def _turn_on_verbose(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value:
        ctx.find_root().params["verbose"] = True  # what the error boundary reads
        output.setup_logging(True)


def _verbose_everywhere(group: click.Group) -> None:
    """Accept ``-v`` / ``--verbose`` after any subcommand too (``cpv model list -v``)."""
    for command in group.commands.values():
        command.params.append(click.Option(
            ["-v", "--verbose"], is_flag=True, expose_value=False, is_eager=True,
            callback=_turn_on_verbose, help="Log what happens, and show tracebacks."))
        if isinstance(command, click.Group):
            _verbose_everywhere(command)


_register()


def _skip_final_collection() -> None:
    """The process is ending: spare the garbage collector its last pass over every object.

    botocore's S3 model alone is some 100,000 objects; that pass took 0.07-0.10 s after a
    download, measured from the command's last step to the process's end (0.01 s without it).
    Everything cpv writes is complete and synced before this point, the standard streams are
    still flushed at exit, and objects outside reference cycles are still freed as usual.
    """
    import gc

    gc.freeze()


def main() -> None:
    """Console entry point."""
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    # SIGINT and SIGTERM now stop cpv at a safe point, with one line (held until the command
    # starts, see CPVGroup.invoke).
    interrupts.install(hold=True)
    try:
        cli.main(prog_name="cpv")
    finally:
        # The command is over and has said how it ended; a signal now simply ends the process.
        for signum in interrupts.SIGNALS:
            signal.signal(signum, signal.SIG_DFL)
        _skip_final_collection()
    sys.exit(0)


if __name__ == "__main__":
    main()
