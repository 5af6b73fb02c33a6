"""The Typer app and the one place where errors become one-line messages.

Every command raises :class:`~ablate.errors.AblateError` (or lets Click raise a usage
error); :class:`_Group.main` prints ``ablate: error: ...`` on one line and exits with
code 2. No traceback reaches a user, whether ablate runs as a console script or under
``typer.testing.CliRunner`` in the tests.
"""

from __future__ import annotations

import sys

import typer

try:  # typer >= 0.20 vendors its own click; its exceptions are not click's
    from typer._click.exceptions import ClickException, NoArgsIsHelpError
    from typer.exceptions import Abort, Exit
except ImportError:  # pragma: no cover - older typer on top of click
    from click.exceptions import Abort, ClickException, Exit, NoArgsIsHelpError
from typer.core import TyperGroup

from ablate.errors import AblateError, OptionError

# Options of the API whose flag is not ``--`` + the name with dashes.
_FLAGS = {"out": "-o", "executor": "--executor", "curves": "--curves", "seeds": "--seeds"}


def flag_of(option: str) -> str:
    """The command-line flag that sets the API's ``option`` (``per_gpu`` -> ``--per-gpu``)."""
    return _FLAGS.get(option, "--" + option.replace("_", "-"))


def fail(message: str, code: int = 2) -> None:
    message = " ".join(message.splitlines())  # one line, even for \r, \x1e, \u2028 in user text
    typer.echo(f"ablate: error: {message}", err=True)
    sys.exit(code)


class _Group(TyperGroup):
    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            rv = super().main(args=args, prog_name=prog_name or "ablate", complete_var=complete_var,
                              standalone_mode=False, **extra)
        except Exit as exc:
            sys.exit(exc.exit_code)
        except NoArgsIsHelpError as exc:
            typer.echo(exc.ctx.get_help() if exc.ctx else str(exc))
            sys.exit(2)
        except ClickException as exc:
            fail(" ".join(exc.format_message().split()), exc.exit_code if exc.exit_code else 2)
        except Abort:
            fail("aborted", 130)
        except OptionError as exc:  # the API names its option; the user gave a flag
            fail(exc.as_flag(flag_of(exc.option)), exc.exit_code)
        except AblateError as exc:
            fail(str(exc).replace("\n", " "), exc.exit_code)
        finally:
            store = sys.modules.get("ablate.store")  # never imported for md/latex tables: nothing to close
            if store is not None:
                store.close_all()
        sys.exit(rv if isinstance(rv, int) else 0)


app = typer.Typer(
    cls=_Group,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help="Ablation studies of graph collaborative-filtering models on RecBole.",
)


@app.callback()
def _root() -> None:
    """Ablation studies of graph collaborative-filtering models on RecBole.

    ablate run SPEC runs a sweep into results.db; ablate table renders the comparison.
    """
